#!/usr/bin/env node
// Replication, recovery and clones (issue 14's "Measure"), through the CLI and real mounts:
//  1. replication lag p50/p99 (seconds: age of the oldest write not on the replica, sampled
//     from `status --json` every 250 ms) while fio runs seqwrite and randwrite16 (bench/jobs.fio)
//     on a mounted current.img replicating to a directory, replicate.interval=1s (the default);
//  2. `create --from` of a REPL_BENCH_DISK_GIB (8) GiB disk with REPL_BENCH_WRITE_MIB written
//     (lazy: index checkpoint + newest segments), then mount, until current.img serves its first
//     read; and the first read of a cold block (its segment only on the replica);
//  3. clone creation with REPL_BENCH_CLONE_GIB (100) GiB disk, REPL_BENCH_CLONE_MIB written
//     sparsely over it (1 MiB every so often): `clone <store>` and `clone <replica>`.
//
//   node bench/replication.mjs     (root: it mounts; make bench runs it)
//
// Env: REPL_BENCH_SECTIONS=seqwrite,randwrite16 (empty: no lag runs), REPL_BENCH_RUNTIME=10 (s per fio job), REPL_BENCH_DISK_GIB=8, REPL_BENCH_WRITE_MIB=1024,
// REPL_BENCH_CLONE_GIB=100, REPL_BENCH_CLONE_MIB=1024, BENCH_DIR (work dir parent), BENCH_RESULTS.
import { spawn, spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const REPO = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const CLI = path.join(REPO, 'dist/src/cli/main.js')
const JOBS = path.join(REPO, 'bench/jobs.fio')
const RESULTS = path.resolve(process.env.BENCH_RESULTS || path.join(REPO, 'bench/results'))
const RUNTIME = Number(process.env.REPL_BENCH_RUNTIME ?? 10)
const DISK_GIB = Number(process.env.REPL_BENCH_DISK_GIB ?? 8)
const WRITE_MIB = Number(process.env.REPL_BENCH_WRITE_MIB ?? 1024)
const CLONE_GIB = Number(process.env.REPL_BENCH_CLONE_GIB ?? 100)
const CLONE_MIB = Number(process.env.REPL_BENCH_CLONE_MIB ?? 1024)
const MiB = 1024 * 1024
const work = fs.mkdtempSync(path.join(process.env.BENCH_DIR ?? os.tmpdir(), 'replbench-'))
const mounted = []

const sh = (cmd, args, opts = {}) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * MiB, ...opts })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}${r.stdout}`)
  return r.stdout
}
const logdisk = (...args) => sh(process.execPath, [CLI, ...args])
const mount = (store, mnt) => { logdisk('mount', store, mnt); mounted.push(mnt) }
const unmount = mnt => { logdisk('unmount', mnt); mounted.splice(mounted.indexOf(mnt), 1) }
async function caughtUp (store) {
  for (;;) {
    const s = JSON.parse(logdisk('status', store, '--json')).replication
    if (s && s.lagBytes === 0 && s.state === 'caught-up') return
    await sleep(200)
  }
}
const seconds = t0 => Number(process.hrtime.bigint() - t0) / 1e9
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : NaN }
/** pread until `length` bytes (FUSE with direct_io returns short reads). */
function readFull (fd, buf, position) {
  let at = 0
  while (at < buf.length) {
    const n = fs.readSync(fd, buf, at, buf.length - at, position + at)
    if (n === 0) break
    at += n
  }
  return at
}
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

/** Writes `mib` MiB of incompressible data into an image file at the given MiB offsets (O_DIRECT not needed: fsync at the end). */
function fill (img, offsetsMib) {
  const fd = fs.openSync(img, 'r+')
  const chunk = crypto.randomBytes(MiB)
  for (const off of offsetsMib) { chunk.writeUInt32LE(off, 0); fs.writeSync(fd, chunk, 0, MiB, off * MiB) }
  fs.fsyncSync(fd)
  fs.closeSync(fd)
}

async function lagUnder (section) {
  const store = path.join(work, `lag-${section}`)
  const mnt = path.join(work, `lag-${section}-mnt`)
  const replica = path.join(work, `lag-${section}-replica`)
  fs.mkdirSync(replica)
  logdisk('create', store, '--size', '2G', '--segment-size', '16M')
  logdisk('policy', 'set', store, `replicate.target=${replica}`, 'history.keep=0')
  mount(store, mnt)
  const samples = []
  try {
    const fio = spawn('fio', [`--section=${section}`, `--runtime=${RUNTIME}`, '--output-format=json', JOBS], { env: { ...process.env, TESTFILE: path.join(mnt, 'current.img') }, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    fio.stdout.on('data', d => { out += d })
    const done = new Promise(resolve => fio.on('exit', resolve))
    let running = true
    done.then(() => { running = false })
    while (running) {
      const r = spawnSync(process.execPath, [CLI, 'status', store, '--json'], { encoding: 'utf8' })
      try { const s = JSON.parse(r.stdout).replication; if (s && typeof s.lagSeconds === 'number') samples.push(s.lagSeconds) } catch { /* busy */ }
      await sleep(250)
    }
    const code = await done
    if (code !== 0) throw new Error(`fio ${section} exited ${code}`)
    const job = JSON.parse(out).jobs[0]
    const mbps = job.write.bw_bytes / 1e6
    // Catch-up: from the end of the writes until the replica holds them all.
    const t0 = process.hrtime.bigint()
    for (;;) {
      const s = JSON.parse(logdisk('status', store, '--json')).replication
      if (s.lagBytes === 0) break
      await sleep(100)
    }
    return { section, mbps, samples: samples.length, p50: pct(samples, 0.5), p99: pct(samples, 0.99), max: Math.max(...samples), catchUpS: seconds(t0) }
  } finally {
    unmount(mnt)
  }
}

async function recovery () {
  const store = path.join(work, 'big')
  const mnt = path.join(work, 'big-mnt')
  const replica = path.join(work, 'big-replica')
  fs.mkdirSync(replica)
  logdisk('create', store, '--size', `${DISK_GIB}G`, '--segment-size', '64M')
  logdisk('policy', 'set', store, `replicate.target=${replica}`, 'history.keep=0')
  mount(store, mnt)
  const t0 = process.hrtime.bigint()
  // Spread over the whole disk, 1 MiB each.
  const stride = Math.max(1, Math.floor(DISK_GIB * 1024 / WRITE_MIB))
  fill(path.join(mnt, 'current.img'), Array.from({ length: WRITE_MIB }, (_, i) => i * stride))
  const writeS = seconds(t0)
  const ofd = fs.openSync(path.join(mnt, 'current.img'), 'r')
  const orig = Buffer.alloc(MiB)
  readFull(ofd, orig, 0)
  fs.closeSync(ofd)
  const want = crypto.createHash('sha256').update(orig).digest('hex')
  await caughtUp(store)
  unmount(mnt)
  const manifest = fs.readdirSync(replica).filter(n => n.startsWith('manifest.')).sort().pop()
  const m = JSON.parse(fs.readFileSync(path.join(replica, manifest), 'utf8'))
  const other = path.join(work, 'recovered')
  const omnt = path.join(work, 'recovered-mnt')
  const t1 = process.hrtime.bigint()
  const rec = JSON.parse(logdisk('create', other, '--from', replica, '--json'))
  const createS = seconds(t1)
  mount(other, omnt)
  const fd = fs.openSync(path.join(omnt, 'current.img'), 'r')
  const buf = Buffer.alloc(4096)
  readFull(fd, buf, DISK_GIB * 1024 * MiB - 4096) // a never-written block: served
  const servedS = seconds(t1)
  // A cold block: block 0 was written first, into the oldest segment (on the replica only).
  const t2 = process.hrtime.bigint()
  const first = Buffer.alloc(MiB)
  readFull(fd, first, 0)
  const coldMs = seconds(t2) * 1000
  const t3 = process.hrtime.bigint()
  readFull(fd, buf, 8192)
  const warmMs = seconds(t3) * 1000
  fs.closeSync(fd)
  const same = crypto.createHash('sha256').update(first).digest('hex') === want
  unmount(omnt)
  return { diskGiB: DISK_GIB, writtenMiB: WRITE_MIB, writeS, segments: Object.keys(m.segments).length, index: m.index?.name ?? null, mode: rec.mode, fetchedMiB: rec.bytes / MiB, remoteSegments: rec.remoteSegments, createS, servedS, coldMs, warmMs, same }
}

async function clones () {
  const store = path.join(work, 'golden')
  const mnt = path.join(work, 'golden-mnt')
  const replica = path.join(work, 'golden-replica')
  fs.mkdirSync(replica)
  logdisk('create', store, '--size', `${CLONE_GIB}G`, '--segment-size', '64M')
  logdisk('policy', 'set', store, `replicate.target=${replica}`, 'history.keep=0')
  mount(store, mnt)
  const stride = Math.max(1, Math.floor(CLONE_GIB * 1024 / CLONE_MIB))
  fill(path.join(mnt, 'current.img'), Array.from({ length: CLONE_MIB }, (_, i) => i * stride))
  logdisk('snapshot', store, '--name', 'golden')
  await caughtUp(store)
  unmount(mnt)
  const t0 = process.hrtime.bigint()
  logdisk('clone', store, 'golden', path.join(work, 'clone-local'))
  const localS = seconds(t0)
  const t1 = process.hrtime.bigint()
  const r = JSON.parse(logdisk('clone', replica, 'golden', path.join(work, 'clone-replica'), '--json'))
  const replicaS = seconds(t1)
  return { diskGiB: CLONE_GIB, writtenMiB: CLONE_MIB, localS, replicaS, fetchedMiB: r.recovered.bytes / MiB, remoteSegments: r.recovered.remoteSegments }
}

try {
  const lag = []
  const sections = (process.env.REPL_BENCH_SECTIONS ?? 'seqwrite,randwrite16').split(',').filter(Boolean)
  for (const section of sections) { lag.push(await lagUnder(section)); console.log(JSON.stringify(lag.at(-1))) }
  const rec = await recovery()
  console.log(JSON.stringify(rec))
  const cl = await clones()
  console.log(JSON.stringify(cl))
  const f = (x, d = 2) => Number.isFinite(x) ? x.toFixed(d) : 'n/a'
  const md = `# Replication, recovery, clones (${new Date().toISOString()}, ${os.cpus().length} CPUs, shared)

Lag: age of the oldest write not on the replica (a directory), sampled every 250 ms from \`status --json\` while fio ran ${RUNTIME} s on a mounted current.img (2 GiB disk, 16 MiB segments, replicate.interval=1s).

| fio job | MB/s | lag p50 s | lag p99 s | max s | samples | catch-up after fio s |
|---|---|---|---|---|---|---|
${lag.map(l => `| ${l.section} | ${f(l.mbps, 0)} | ${f(l.p50)} | ${f(l.p99)} | ${f(l.max)} | ${l.samples} | ${f(l.catchUpS)} |`).join('\n')}

Recovery: a ${rec.diskGiB} GiB disk (64 MiB segments) with ${rec.writtenMiB} MiB written over it (1 MiB pieces spread over the whole disk; ${rec.segments} sealed segments on the replica, index checkpoint ${rec.index}). \`create --from\` (${rec.mode}: ${f(rec.fetchedMiB, 1)} MiB fetched, ${rec.remoteSegments} segments left on the replica) took ${f(rec.createS)} s; from its start until a mounted current.img served a read: ${f(rec.servedS)} s. First read of a cold 1 MiB (its segment only on the replica; the frames that hold it fetched by range, LDARCH2): ${f(rec.coldMs, 0)} ms; a warm 4 KiB read after it: ${f(rec.warmMs, 1)} ms. Bytes as the original's: ${rec.same}.

Clones: a ${cl.diskGiB} GiB disk with ${cl.writtenMiB} MiB written sparsely over it, snapshot \`golden\`. \`clone <store>\`: ${f(cl.localS)} s. \`clone <replica>\` (a directory; lazy recovery of a hidden read-only parent, ${f(cl.fetchedMiB, 1)} MiB fetched, ${cl.remoteSegments} segments left on the replica): ${f(cl.replicaS)} s. Both include starting the CLI (about 0.3 s here).
`
  console.log(md)
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').replace(/-\d+Z$/, 'Z')
  const out = path.join(RESULTS, `${stamp}-replication`)
  fs.mkdirSync(RESULTS, { recursive: true })
  fs.writeFileSync(`${out}.json`, JSON.stringify({ lag, recovery: rec, clones: cl }, null, 2) + '\n')
  fs.writeFileSync(`${out}.md`, md)
  console.log(`wrote ${out}.{md,json}`)
} finally {
  for (const mnt of [...mounted]) spawnSync(process.execPath, [CLI, 'unmount', mnt])
  fs.rmSync(work, { recursive: true, force: true })
}
