#!/usr/bin/env node
// Archive targets side by side: put and get of 64 MiB segment-sized objects through the
// ArchiveTarget interface (src/archive: put = upload, publish, verify; get = download and check
// the sha256) against a directory, s3rver and a one-node Ceph object gateway; plus how long the
// Ceph test cluster takes to start from nothing (packages installed).
//
//   node bench/archive-targets.mjs      (root, after make build; make bench runs it)
//
// Environment: ARCHIVE_BENCH_OBJECTS=5 objects per target, ARCHIVE_BENCH_MIB=64 their size,
// ARCHIVE_BENCH_STARTS=3 Ceph starts timed, BENCH_RESULTS=bench/results.
// The objects are random (incompressible) bytes: this measures the targets, not the codec.
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'

const REPO = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const require = createRequire(import.meta.url)
const dist = p => path.join(REPO, 'dist', p)
for (const f of ['src/archive/index.js', 'test/helpers/ceph.js', 'test/helpers/s3-server.js']) {
  if (!fs.existsSync(dist(f))) { console.error(`archive-targets: ${dist(f)} is missing: run make build`); process.exit(1) }
}
const { DirTarget, S3Target, resolveS3Settings } = require(dist('src/archive/index.js'))
const { startCeph, cephMissing } = require(dist('test/helpers/ceph.js'))
const { startS3Server } = require(dist('test/helpers/s3-server.js'))

const OBJECTS = Number(process.env.ARCHIVE_BENCH_OBJECTS ?? 5)
const MIB = Number(process.env.ARCHIVE_BENCH_MIB ?? 64)
const STARTS = Number(process.env.ARCHIVE_BENCH_STARTS ?? 3)
const RESULTS = path.resolve(process.env.BENCH_RESULTS || path.join(REPO, 'bench/results'))
const bytes = MIB * 1024 * 1024

const median = xs => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2 }
const mbps = s => bytes / 1e6 / s

async function measure (label, target) {
  const puts = []
  const gets = []
  for (let i = 0; i < OBJECTS; i++) {
    const data = crypto.randomBytes(bytes)
    const name = `bench-seg-${String(i).padStart(4, '0')}`
    let t0 = performance.now()
    await target.put(name, data)
    puts.push((performance.now() - t0) / 1000)
    t0 = performance.now()
    const back = await target.get(name)
    gets.push((performance.now() - t0) / 1000)
    if (!back.equals(data)) throw new Error(`${label}: ${name} came back different`)
    await target.delete(name)
  }
  await target.close()
  const row = { target: label, putSeconds: median(puts), getSeconds: median(gets), putMBps: mbps(median(puts)), getMBps: mbps(median(gets)), puts, gets }
  console.log(`${label.padEnd(10)} put ${row.putMBps.toFixed(0).padStart(5)} MB/s (median ${row.putSeconds.toFixed(2)} s)   get ${row.getMBps.toFixed(0).padStart(5)} MB/s (median ${row.getSeconds.toFixed(2)} s)`)
  return row
}

const rows = []
const starts = []
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-archive-bench-'))
try {
  rows.push(await measure('directory', new DirTarget(dir)))
} finally {
  fs.rmSync(dir, { recursive: true, force: true })
}

const s3rver = await startS3Server('bench')
try {
  rows.push(await measure('s3rver', new S3Target('bench', 'b', resolveS3Settings('bench', { ...s3rver.settings, socketTimeoutMs: 120_000 }, {}))))
} finally {
  await s3rver.stop()
}

const missing = cephMissing()
if (missing) {
  console.log(`ceph: skipped (${missing})`)
} else {
  for (let i = 0; i < STARTS; i++) {
    const g = await startCeph()
    starts.push(g.startSeconds)
    console.log(`ceph start ${i + 1}: ${g.startSeconds.toFixed(1)} s`)
    if (i === STARTS - 1) {
      try {
        await g.createBucket('bench')
        rows.push(await measure('ceph', new S3Target('bench', 'b', resolveS3Settings('bench', { ...g.settings, socketTimeoutMs: 120_000 }, {}))))
      } finally {
        await g.stop()
      }
    } else {
      await g.stop()
    }
  }
}

const load = os.loadavg().map(x => x.toFixed(1)).join(' ')
const stamp = new Date().toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-')
const md = [
  `# Archive targets, ${stamp}`,
  '',
  `${OBJECTS} objects of ${MIB} MiB (random bytes) per target, medians; ${os.cpus().length} CPUs, load average at the end ${load}.`,
  'put = upload + publish + verify (ArchiveTarget.put), get = download + sha256 check.',
  '',
  '| target | put MB/s | get MB/s | put s (median) | get s (median) |',
  '|---|--:|--:|--:|--:|',
  ...rows.map(r => `| ${r.target} | ${r.putMBps.toFixed(0)} | ${r.getMBps.toFixed(0)} | ${r.putSeconds.toFixed(2)} | ${r.getSeconds.toFixed(2)} |`),
  '',
  starts.length > 0 ? `Ceph test cluster start (packages installed), ${starts.length} starts: ${starts.map(s => s.toFixed(1)).join(', ')} s.` : 'Ceph: not run.',
  ''
].join('\n')
fs.mkdirSync(RESULTS, { recursive: true })
fs.writeFileSync(path.join(RESULTS, `${stamp}-archive.md`), md)
fs.writeFileSync(path.join(RESULTS, `${stamp}-archive.json`), JSON.stringify({ objects: OBJECTS, mib: MIB, rows, cephStartSeconds: starts, load: os.loadavg() }, null, 1) + '\n')
console.log(`\n${md}\nwritten to ${path.join(RESULTS, `${stamp}-archive.md`)}`)
