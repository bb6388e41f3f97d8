#!/usr/bin/env node
// Snapshot benchmark (issue: snapshots are O(1) cuts; reads stay fast with many snapshots).
//
//   node bench/snapshots.mjs        (root: it mounts; run by `make bench` after run.mjs)
//
// A. Cost of `snapshot` with 4 GiB written and 1,000 snapshots, through the library:
//    p50/p99/max of each snapshot() call (goal: p99 < 10 ms), and that the cost of the last
//    100 is no higher than the first 100's (O(1)).
// B. Random 4 KiB reads of a snapshot image through FUSE, fio randread at QD1 and QD16, with
//    the same rewrites after the snapshot either under 1 snapshot or under 1,000 snapshots
//    (one after each rewrite): the ratio 1000/1 is the goal (>= 0.8).
// Env: SNAP_BENCH_GIB (default 4), SNAP_BENCH_COUNT (default 1000), BENCH_RUNTIME (s, default 5).
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const REPO = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const { Store } = require(path.join(REPO, 'dist/src/store'))
const CLI = path.join(REPO, 'dist/src/cli/main.js')
const GIB = Number(process.env.SNAP_BENCH_GIB ?? 4)
const COUNT = Number(process.env.SNAP_BENCH_COUNT ?? 1000)
const RUNTIME = Number(process.env.BENCH_RUNTIME ?? 5)
const work = fs.mkdtempSync(path.join(process.env.BENCH_DIR ?? os.tmpdir(), 'snapbench-'))
const MiB = 1024 * 1024

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]
const sh = (cmd, args) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`)
  return r.stdout
}

async function partA () {
  const dir = path.join(work, 'a')
  await Store.create(dir, { sizeBytes: (GIB + 1) * 1024 * MiB })
  const store = await Store.open(dir)
  const buf = Buffer.alloc(MiB)
  const t0 = Date.now()
  for (let i = 0; i < GIB * 1024; i++) {
    buf.writeUInt32LE(i, 0) // distinct data, cheaply
    await store.write(i * MiB, buf)
  }
  await store.flush()
  const writeS = (Date.now() - t0) / 1000
  const times = []
  for (let i = 0; i < COUNT; i++) {
    await store.write((i % 1024) * MiB, buf.subarray(0, 64 * 1024)) // something in each partition
    const s = process.hrtime.bigint()
    await store.snapshot({ name: `s${i}` })
    times.push(Number(process.hrtime.bigint() - s) / 1e6)
  }
  // The floor: the same 64 KiB write then a plain flush (one fdatasync), no snapshot.
  const flushes = []
  for (let i = 0; i < COUNT; i++) {
    await store.write((i % 1024) * MiB, buf.subarray(0, 64 * 1024))
    const s = process.hrtime.bigint()
    await store.flush()
    flushes.push(Number(process.hrtime.bigint() - s) / 1e6)
  }
  flushes.sort((a, b) => a - b)
  await store.close()
  const sorted = [...times].sort((a, b) => a - b)
  const firstHundred = times.slice(0, 100).sort((a, b) => a - b)
  const lastHundred = times.slice(-100).sort((a, b) => a - b)
  fs.rmSync(dir, { recursive: true, force: true })
  return { writtenGiB: GIB, writeMBps: Math.round(GIB * 1024 / writeS), snapshots: COUNT, p50: pct(sorted, 0.5), p99: pct(sorted, 0.99), max: sorted.at(-1), p50First100: pct(firstHundred, 0.5), p50Last100: pct(lastHundred, 0.5), flushP50: pct(flushes, 0.5), flushP99: pct(flushes, 0.99) }
}

function fioIops (file, iodepth) {
  const out = sh('fio', ['--name=r', `--filename=${file}`, '--rw=randread', '--bs=4k', `--iodepth=${iodepth}`, '--ioengine=libaio', '--direct=1',
    '--size=1G', `--runtime=${RUNTIME}`, '--time_based', '--ramp_time=1', '--readonly', '--output-format=json'])
  return Math.round(JSON.parse(out).jobs[0].read.iops)
}

/** Prefill 1 GiB, snapshot `base`, then COUNT rewrites of 1 MiB; snapshots after each when `many`. */
async function partBScenario (many) {
  const dir = path.join(work, many ? 'many' : 'one')
  await Store.create(dir, { sizeBytes: 2 * 1024 * MiB })
  const store = await Store.open(dir)
  const buf = Buffer.alloc(MiB, 1)
  for (let i = 0; i < 1024; i++) await store.write(i * MiB, buf)
  await store.snapshot({ name: 'base' })
  let x = 12345
  for (let i = 0; i < COUNT; i++) {
    x = (x * 1103515245 + 12345) % 2147483648
    buf.writeUInt32LE(i, 0)
    await store.write((x % 1024) * MiB, buf)
    if (many) await store.snapshot({ name: `s${i}` })
  }
  await store.close()
  const mnt = path.join(work, `mnt-${many ? 'many' : 'one'}`)
  sh(process.execPath, [CLI, 'mount', dir, mnt])
  try {
    spawnSync('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches'])
    return { qd1: fioIops(path.join(mnt, 'base.img'), 1), qd16: fioIops(path.join(mnt, 'base.img'), 16) }
  } finally {
    sh(process.execPath, [CLI, 'unmount', mnt])
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

async function main () {
  console.log(`snapshot benchmark in ${work}`)
  const a = await partA()
  console.log(`A. ${a.snapshots} snapshots after ${a.writtenGiB} GiB written (${a.writeMBps} MB/s through the library):`)
  console.log(`   snapshot latency p50 ${a.p50.toFixed(2)} ms, p99 ${a.p99.toFixed(2)} ms (goal < 10), max ${a.max.toFixed(2)} ms; p50 of the first 100 ${a.p50First100.toFixed(2)} ms, of the last 100 ${a.p50Last100.toFixed(2)} ms`)
  console.log(`   the floor, one fdatasync after the same write: p50 ${a.flushP50.toFixed(2)} ms, p99 ${a.flushP99.toFixed(2)} ms`)
  const one = await partBScenario(false)
  const many = await partBScenario(true)
  console.log(`B. random 4 KiB reads of a snapshot image after ${COUNT} MiB-rewrites, IOPS:`)
  console.log(`   QD1:  1 snapshot ${one.qd1}, ${COUNT + 1} snapshots ${many.qd1}, ratio ${(many.qd1 / one.qd1).toFixed(2)} (goal >= 0.8)`)
  console.log(`   QD16: 1 snapshot ${one.qd16}, ${COUNT + 1} snapshots ${many.qd16}, ratio ${(many.qd16 / one.qd16).toFixed(2)} (goal >= 0.8)`)
  const results = path.join(REPO, 'bench/results')
  fs.mkdirSync(results, { recursive: true })
  const file = path.join(results, `snapshots-${new Date().toISOString().replace(/[:.]/g, '-')}.json`)
  fs.writeFileSync(file, JSON.stringify({ a, b: { one, many } }, null, 2))
  console.log(`saved ${file}`)
  fs.rmSync(work, { recursive: true, force: true })
}

main().catch(err => { console.error(err); process.exit(1) })
