#!/usr/bin/env node
// What the disk under the store does with a log's sequential writes, without logdisk: one
// writer appends 1 MiB writes to 64 MiB segment files (the log's shape) in four ways, and
// the throughput and the bytes the disk wrote are printed side by side. The question it
// answers (docs/WRITE-ABSORPTION.md): how much of the sequential-write gap to a peer that
// overwrites its image in place is the cost of writing every byte to new file space, and
// what dropping dead segments before writeback would give back.
//
//   keep-all   every segment stays (the log today between compactions)
//   drop-dead  a segment is unlinked once WINDOW newer ones exist (the live data of a
//              sequential rewrite of WINDOW x 64 MiB; never synced: the dirty pages go with it)
//   drop+sync  the same (a dead segment a sync covered goes too, but its bytes were written),
//              with an fdatasync of every segment written since the last one, every
//              SYNC_MS (default 1000: what the index checkpoint's log sync does today; an ext4
//              over the image asks for a flush at each journal commit, every 5 s)
//   overwrite  WINDOW segment files rewritten in turn (what qcow2's page cache sees)
//
// Usage: [SYNC_MS=1000] [MODES=keep-all,...] node bench/write-absorption.mjs [DIR] [GiB per mode, default 8] [WINDOW, default 16]
import fs from 'node:fs'
import path from 'node:path'
import crypto from 'node:crypto'
import { execFileSync } from 'node:child_process'

const dir = path.resolve(process.argv[2] || 'bench-absorb')
const total = Number(process.argv[3] || 8) * 1024 ** 3
const window = Number(process.argv[4] || 16)
const SEG = 64 * 1024 * 1024
const MIB = 1024 * 1024
const buf = crypto.randomBytes(MIB)
const syncMs = Number(process.env.SYNC_MS || 1000)

/** Bytes written by the block device holding `dir` (sectors of /proc/diskstats). */
function diskBytes () {
  const dev = fs.statSync(dir).dev
  const major = Math.floor(dev / 256) & 0xfff
  const minor = (dev & 0xff) | ((Math.floor(dev / 4096) & 0xfff00))
  for (const line of fs.readFileSync('/proc/diskstats', 'utf8').split('\n')) {
    const f = line.trim().split(/\s+/)
    if (Number(f[0]) === major && Number(f[1]) === minor) return Number(f[9]) * 512
  }
  return NaN
}

function clear () {
  for (const f of fs.readdirSync(dir)) fs.rmSync(path.join(dir, f), { force: true })
  execFileSync('sync')
}

function run (mode) {
  clear()
  if (mode === 'overwrite') { // allocate and write the files once, outside the measurement
    for (let i = 0; i < window; i++) {
      const fd = fs.openSync(path.join(dir, `s-${i}`), 'w')
      for (let off = 0; off < SEG; off += MIB) fs.writeSync(fd, buf, 0, MIB, off)
      fs.closeSync(fd)
    }
    execFileSync('sync')
  }
  const before = diskBytes()
  const started = process.hrtime.bigint()
  let worst = 0
  let lastSync = Date.now()
  const unsynced = []
  let n = 0
  for (let i = 0; n < total; i++, n += SEG) {
    const name = path.join(dir, `s-${mode === 'overwrite' ? i % window : i}`)
    const fd = fs.openSync(name, mode === 'overwrite' ? 'r+' : 'w')
    for (let off = 0; off < SEG; off += MIB) {
      const t = process.hrtime.bigint()
      fs.writeSync(fd, buf, 0, MIB, off)
      const ms = Number(process.hrtime.bigint() - t) / 1e6
      if (ms > worst) worst = ms
    }
    if (mode === 'drop+sync') {
      unsynced.push({ i, fd })
      if (Date.now() - lastSync >= syncMs) {
        for (const u of unsynced.splice(0)) { fs.fdatasyncSync(u.fd); fs.closeSync(u.fd) }
        lastSync = Date.now()
      }
    } else fs.closeSync(fd)
    if ((mode === 'drop-dead' || mode === 'drop+sync') && i >= window) {
      // A dead segment a sync covered was written already; it goes too (compaction's job).
      const at = unsynced.findIndex(u => u.i === i - window)
      if (at >= 0) fs.closeSync(unsynced.splice(at, 1)[0].fd)
      fs.rmSync(path.join(dir, `s-${i - window}`))
    }
  }
  for (const u of unsynced) fs.closeSync(u.fd)
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  const written = diskBytes() - before
  execFileSync('sync')
  const afterSync = diskBytes() - before
  return { mode, mbs: total / seconds / 1e6, worst, diskPerByte: written / total, diskPerByteAfterSync: afterSync / total }
}

fs.mkdirSync(dir, { recursive: true })
const rows = []
for (const mode of (process.env.MODES || 'keep-all,drop-dead,drop+sync,overwrite').split(',')) rows.push(run(mode))
clear()
fs.rmdirSync(dir)
console.log(`${(total / 1024 ** 3).toFixed(0)} GiB per mode in 1 MiB writes, 64 MiB segments, window ${window} segments (${window * 64} MiB), drop+sync every ${syncMs} ms`)
console.log('| mode      | MB/s | worst write ms | disk ÷ written (during) | (after sync) |')
console.log('|:----------|-----:|---------------:|------------------------:|-------------:|')
for (const r of rows) console.log(`| ${r.mode.padEnd(9)} | ${r.mbs.toFixed(0).padStart(4)} | ${r.worst.toFixed(0).padStart(14)} | ${r.diskPerByte.toFixed(2).padStart(23)} | ${r.diskPerByteAfterSync.toFixed(2).padStart(12)} |`)
