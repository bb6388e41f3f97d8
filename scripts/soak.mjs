#!/usr/bin/env node
// make soak [CYCLES=200]: real kill -9 of a mounted logdisk daemon, again and again, while an
// ext4 on its image takes writes and the daemon compacts, archives, snapshots and merges in
// the background (policies with short periods). After each kill: remount, e2fsck (must be
// clean), then check every write that was acknowledged before the kill:
//  - fio files written with verify=crc32c and fsynced in earlier cycles (fio --verify_only);
//  - a record writer (O_DSYNC, one 4 KiB record at a time) whose acknowledged records are
//    journaled outside the store: each must read back intact.
// Prints cycles run, writes lost (must be 0) and fsck errors (must be 0). Needs root, FUSE,
// loop devices, fio and e2fsprogs. Not part of make test (it takes about 10 s a cycle).
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const CYCLES = Number(process.env.CYCLES ?? 200)
const CLI = path.resolve('dist/src/cli/main.js')
const work = fs.mkdtempSync(path.join(process.env.SOAK_DIR ?? os.tmpdir(), 'logdisk-soak-'))
const store = path.join(work, 'store')
const mnt = path.join(work, 'mnt')
const fsDir = path.join(work, 'fs')
const archive = path.join(work, 'archive')
const journal = path.join(work, 'acked') // outside the store: survives the daemon
fs.mkdirSync(fsDir)
fs.mkdirSync(archive)
fs.mkdirSync(journal)
const img = path.join(mnt, 'current.img')
const env = { ...process.env, LOGDISK_MAINTENANCE_TICK_MS: '500' }

const sh = (cmd, args, opts = {}) => spawnSync(cmd, args, { encoding: 'utf8', env, timeout: opts.timeout ?? 120_000 })
const must = (cmd, args, opts) => {
  const r = sh(cmd, args, opts)
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}${r.stdout}`)
  return r.stdout
}
const logdisk = (...args) => must(process.execPath, [CLI, ...args])
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))
const daemonPid = () => JSON.parse(fs.readFileSync(path.join(store, 'daemon.json'), 'utf8')).pid
const mounted = dir => fs.readFileSync('/proc/mounts', 'utf8').split('\n').some(l => l.split(' ')[1] === dir)

function cleanupMounts () {
  if (mounted(fsDir)) sh('umount', ['-l', fsDir])
  for (const line of sh('losetup', ['-a']).stdout.split('\n')) if (line.includes(mnt)) sh('losetup', ['-d', line.split(':')[0]])
  if (mounted(mnt)) sh('fusermount', ['-uz', mnt])
}

const totals = { cycles: 0, fioFilesVerified: 0, fioErrors: 0, recordsAcked: 0, recordsLost: 0, fsckErrors: 0, kills: 0 }
const fioFiles = []
process.on('exit', () => { cleanupMounts(); try { process.kill(daemonPid(), 'SIGKILL') } catch {} })
process.on('SIGINT', () => process.exit(130))

const fioJob = (file, extra) => ['--name=soak', `--filename=${file}`, '--rw=write', '--bs=64k', '--size=8m', '--ioengine=psync', '--verify=crc32c', ...extra]

/** The record writer: O_DSYNC 4 KiB records, each journaled (outside the store) once acknowledged. */
const WRITER = `
const fs = require('fs'); const crypto = require('crypto')
const [file, log, cycle] = process.argv.slice(1)
const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_DSYNC)
const out = fs.openSync(log, 'a')
for (let i = 0; ; i++) {
  const rec = Buffer.alloc(4096); crypto.randomFillSync(rec, 16)
  rec.writeUInt32LE(0x5041c0de, 0); rec.writeUInt32LE(Number(cycle), 4); rec.writeUInt32LE(i, 8)
  rec.writeUInt32LE(crypto.createHash('sha256').update(rec.subarray(16)).digest().readUInt32LE(0), 12)
  try { fs.writeSync(fd, rec, 0, 4096, (i % 4096) * 4096) } catch { process.exit(0) }
  fs.writeSync(out, i + ' ' + rec.toString('base64') + '\\n')
}`

function checkRecords () {
  let acked = 0
  let lost = 0
  for (const name of fs.readdirSync(journal)) {
    const cycle = name.replace('.log', '')
    const file = path.join(fsDir, `records-${cycle}.dat`)
    const last = new Map()
    for (const line of fs.readFileSync(path.join(journal, name), 'utf8').split('\n')) {
      const [i, b64] = line.split(' ')
      if (b64) last.set(Number(i) % 4096, Buffer.from(b64, 'base64')) // later records overwrite slots
    }
    let fd
    try { fd = fs.openSync(file, 'r') } catch { lost += last.size; continue }
    for (const [slot, want] of last) {
      acked++
      const got = Buffer.alloc(4096)
      fs.readSync(fd, got, 0, 4096, slot * 4096)
      if (!got.equals(want)) lost++
    }
    fs.closeSync(fd)
  }
  return { acked, lost }
}

function fsck () {
  const r = sh('e2fsck', ['-fn', img], { timeout: 300_000 })
  if (r.status !== 0) {
    console.log(`  e2fsck exited ${r.status}: ${(r.stdout + r.stderr).split('\n').slice(0, 6).join(' | ')}`)
    return 1
  }
  return 0
}

async function main () {
  logdisk('create', store, '--size', '1G', '--segment-size', '16M')
  logdisk('policy', 'set', store, 'compact.every=3s', 'history.keep=0', `archive.target=${archive}`, 'segments.workingSet=8',
    'snapshot.every=8s', 'snapshot.keep=2', 'baseline.olderThan=20s', 'compact.cleanBelow=0.5')
  logdisk('mount', store, mnt)
  must('mkfs.ext4', ['-q', '-F', img])
  logdisk('unmount', mnt)
  const started = Date.now()
  for (let cycle = 1; cycle <= CYCLES; cycle++) {
    logdisk('mount', store, mnt)
    if (cycle > 1) {
      // Mounting replays ext4's journal (the kill left it dirty); e2fsck then checks the rest.
      must('mount', ['-o', 'loop', img, fsDir])
      must('umount', [fsDir])
      totals.fsckErrors += fsck()
    }
    must('mount', ['-o', 'loop', img, fsDir])
    // Everything acknowledged before the last kill must be there.
    for (const f of fioFiles) {
      const r = sh('fio', fioJob(f, ['--verify_only', '--do_verify=1']), { timeout: 300_000 })
      totals.fioFilesVerified++
      if (r.status !== 0) { totals.fioErrors++; console.log(`  fio verify of ${path.basename(f)} failed: ${r.stdout.split('\n').filter(l => /err|verify/.test(l)).slice(0, 3).join(' | ')}`) }
    }
    const rec = checkRecords()
    totals.recordsAcked = rec.acked
    totals.recordsLost = rec.lost
    // A new fio file, written, verified and fsynced before any kill.
    while (fioFiles.length >= 6) fs.rmSync(fioFiles.shift(), { force: true })
    const f = path.join(fsDir, `fio-${cycle}.dat`)
    must('fio', fioJob(f, ['--do_verify=1', '--end_fsync=1']), { timeout: 300_000 })
    fioFiles.push(f)
    // Load while the daemon dies: the record writer and fio random writes.
    for (const old of fs.readdirSync(fsDir).filter(n => n.startsWith('records-'))) {
      const c = Number(old.slice(8, -4))
      if (c < cycle - 3) { fs.rmSync(path.join(fsDir, old)); fs.rmSync(path.join(journal, `${c}.log`), { force: true }) }
    }
    const writer = spawn(process.execPath, ['-e', WRITER, path.join(fsDir, `records-${cycle}.dat`), path.join(journal, `${cycle}.log`), String(cycle)], { stdio: 'ignore' })
    const load = spawn('fio', ['--name=load', `--filename=${path.join(fsDir, 'scratch.dat')}`, '--rw=randwrite', '--bs=16k', '--size=64m', '--time_based', '--runtime=60', '--ioengine=psync', '--fsync=8'], { stdio: 'ignore' })
    await sleep(1000 + Math.floor(Math.random() * 4000))
    process.kill(daemonPid(), 'SIGKILL')
    totals.kills++
    await sleep(300)
    for (const child of [writer, load]) {
      const exited = new Promise(resolve => child.once('exit', resolve))
      if (child.exitCode === null) await Promise.race([exited, sleep(5000)])
      if (child.exitCode === null) child.kill('SIGKILL')
    }
    cleanupMounts()
    totals.cycles = cycle
    console.log(`cycle ${cycle}: ${totals.fioFilesVerified} fio files verified (${totals.fioErrors} failed), ${totals.recordsAcked} acknowledged records checked (${totals.recordsLost} lost), ${totals.fsckErrors} fsck errors`)
  }
  // The last kill too.
  logdisk('mount', store, mnt)
  must('mount', ['-o', 'loop', img, fsDir])
  must('umount', [fsDir])
  totals.fsckErrors += fsck()
  must('mount', ['-o', 'loop', img, fsDir])
  const rec = checkRecords()
  totals.recordsAcked = rec.acked
  totals.recordsLost = rec.lost
  for (const f of fioFiles) if (sh('fio', fioJob(f, ['--verify_only', '--do_verify=1'])).status !== 0) totals.fioErrors++
  must('umount', [fsDir])
  const verify = sh(process.execPath, [CLI, 'verify', store], { timeout: 600_000 })
  logdisk('unmount', mnt)
  const lost = totals.fioErrors + totals.recordsLost
  console.log(`\nsoak: ${totals.cycles} cycles (${totals.kills} kill -9), ${((Date.now() - started) / 60000).toFixed(1)} min`)
  console.log(`writes lost: ${lost} (fio files failing verify: ${totals.fioErrors}; acknowledged records lost: ${totals.recordsLost} of ${totals.recordsAcked})`)
  console.log(`fsck errors: ${totals.fsckErrors}`)
  console.log(`logdisk verify: ${verify.status === 0 ? 'ok' : verify.stdout + verify.stderr}`)
  fs.rmSync(work, { recursive: true, force: true })
  process.exit(lost === 0 && totals.fsckErrors === 0 && verify.status === 0 ? 0 : 1)
}

main().catch(err => { console.error(err.stack); cleanupMounts(); process.exit(1) })
