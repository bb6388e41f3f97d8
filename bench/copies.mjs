#!/usr/bin/env node
// Copy speeds (issue 12 item 6): restore, export, send, receive and verify of a store holding
// COPIES_DATA bytes, beside `cp --sparse=always` and `qemu-img convert -O raw` of a
// same-size image on the same disk, in the same run; then the incremental case: 4 MiB of
// scattered single-block changes on the same store (COPIES_SIZE, 8 GiB by default), sent,
// received and diffed. Every logdisk step is a CLI command on an unmounted store, timed from
// spawn to exit (so a command's start-up counts). Each timed step runs COPIES_RUNS times,
// the copies interleaved with cp and qemu-img so that they share the machine's moods, and
// the tables give medians (cp alone took 2.9-17 s on the 2-CPU VM between runs); the
// incremental steps are set against the issue's goal of under 1 s.
//
//   node bench/copies.mjs           (after make build)
//
// Environment:
//   COPIES_SIZE=8G        volume size
//   COPIES_DATA=2G        bytes written (from offset 0, with a 64 MiB hole every 512 MiB)
//   COPIES_DIR=/path      work dir (default bench/work/copies); emptied at start and end
//   COPIES_RUNS=3         runs of each timed step (medians reported)
//   COPIES_KEEP=1         keep it
//   COPIES_STEPS=incremental  only what the incremental steps need: the fill, a full send and
//                         receive per run (timed all the same), then the incremental steps;
//                         no restore, export, verify, cp or qemu-img (about a minute, not six)
//   BENCH_RESULTS=/path   where <timestamp>-copies.{md,json} go (default bench/results)
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const MiB = 1024 * 1024
const BENCH = path.dirname(fileURLToPath(import.meta.url))
const REPO = path.dirname(BENCH)
const CLI = path.join(REPO, 'dist/src/cli/main.js')
const WORK = path.resolve(process.env.COPIES_DIR || path.join(BENCH, 'work', 'copies'))
const RESULTS = path.resolve(process.env.BENCH_RESULTS || path.join(BENCH, 'results'))
const SIZE = parseSize(process.env.COPIES_SIZE || '8G')
const DATA = parseSize(process.env.COPIES_DATA || '2G')
const KEEP = process.env.COPIES_KEEP === '1'
const RUNS = Math.max(1, Number(process.env.COPIES_RUNS || 3))
const STEPS = process.env.COPIES_STEPS || 'all'
if (STEPS !== 'all' && STEPS !== 'incremental') throw new Error(`COPIES_STEPS=${STEPS}: all or incremental`)
const FULL = STEPS === 'all'
/** The issue's goal for an incremental send, receive or diff of 4 MiB (item 6), seconds. */
const INCREMENT_GOAL = 1

function parseSize (s) {
  const m = /^(\d+)([KMG]?)$/i.exec(s)
  if (!m) throw new Error(`bad size ${s}`)
  return Number(m[1]) * { '': 1, K: 1024, M: MiB, G: 1024 * MiB }[m[2].toUpperCase()]
}

function run (cmd, args, opts = {}) {
  const t0 = process.hrtime.bigint()
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * MiB, ...opts })
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr || r.error}`)
  return { seconds, stdout: r.stdout }
}
const logdisk = (...args) => run(process.execPath, [CLI, ...args])
const sh = (cmd) => run('bash', ['-c', cmd])

const QEMU_IMG = FULL && spawnSync('qemu-img', ['--version']).status === 0
if (FULL && !QEMU_IMG) console.warn('qemu-img is missing (scripts/install-deps.sh bench installs it): its column is left out')
const loadAtStart = os.loadavg().map(l => l.toFixed(2)).join(' ')
if (!fs.existsSync(CLI)) { console.error(`${CLI} is missing: run make build first`); process.exit(1) }
fs.rmSync(WORK, { recursive: true, force: true })
fs.mkdirSync(WORK, { recursive: true })
// Identities remembered by the direct sends (identity-cache.ts) go to the user's cache
// directory: one of the work dir's, so a run starts without any and leaves none behind.
process.env.LOGDISK_CACHE_DIR = path.join(WORK, 'user-cache')
const src = path.join(WORK, 'src')
const dst = path.join(WORK, 'dst')
const out = (name) => path.join(WORK, name)
const rows = []
const median = (xs) => { const v = [...xs].sort((a, b) => a - b); const m = v.length >> 1; return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2 }
const samples = new Map() // step -> { seconds: [], bytes, note }
/** One timing of a step; the row (median of its runs) is made by report(). */
const sample = (what, seconds, bytes, note = '') => {
  const x = samples.get(what) ?? { seconds: [], bytes, note }
  x.seconds.push(seconds)
  x.note = note || x.note
  samples.set(what, x)
  console.log(`${what.padEnd(34)} ${seconds.toFixed(2).padStart(8)} s  ${bytes ? (bytes / seconds / 1e6).toFixed(0).padStart(6) + ' MB/s' : ''}  ${note}`)
}
const report = () => {
  for (const [what, x] of samples) {
    const seconds = median(x.seconds)
    rows.push({ what, seconds, runs: x.seconds, min: Math.min(...x.seconds), max: Math.max(...x.seconds), bytes: x.bytes, mbps: x.bytes / seconds / 1e6, note: x.note })
  }
}
const record = (what, seconds, bytes, note = '') => sample(what, seconds, bytes, note)

try {
  console.log(`copies: ${RUNS} runs, ${SIZE / 2 ** 30} GiB volume, ${DATA / 2 ** 30} GiB written, in ${WORK}; load ${os.loadavg().map(l => l.toFixed(2)).join(' ')}`)
  logdisk('create', src, '--size', String(SIZE))
  logdisk('create', dst, '--size', String(SIZE))
  // Fill through the library (no mount needed): DATA bytes of incompressible data.
  const fill = `
    const { openStore } = await import(${JSON.stringify(path.join(REPO, 'dist/src/app/open.js'))})
    const crypto = await import('node:crypto')
    const { store } = await openStore(${JSON.stringify(src)})
    const chunk = crypto.randomBytes(${4 * MiB})
    let off = 0, written = 0
    while (written < ${DATA}) {
      if (off % ${512 * MiB} === ${448 * MiB}) { off += ${64 * MiB}; continue } // a hole
      chunk.writeUInt32LE(off / 4096, 0)
      await store.write(off, chunk)
      off += chunk.length; written += chunk.length
    }
    await store.flush(); await store.close()`
  record('fill (library writes)', run(process.execPath, ['--input-type=module', '-e', fill]).seconds, DATA)
  logdisk('snapshot', src, '--name', 'a')
  for (let run = 1; run <= RUNS; run++) record('logdisk --version (start-up)', logdisk('--version').seconds, 0)

  const dsts = []
  for (let run = 1; run <= RUNS; run++) {
    console.log(`-- run ${run} of ${RUNS}; load ${os.loadavg().map(l => l.toFixed(2)).join(' ')}`)
    for (const f of ['restore.img', 'export.img', 'a.stream']) fs.rmSync(out(f), { force: true })
    sh('sync')
    if (FULL) {
      const r = logdisk('restore', src, '--at', 'a', '--out', out('restore.img'))
      record('restore --at a', r.seconds, DATA)
      const e = logdisk('export', src, 'a', '--out', out('export.img'))
      record('export a', e.seconds, DATA)
    }
    const s = logdisk('send', src, 'a', '--out', out('a.stream'))
    record('send a (full)', s.seconds, DATA)
    sh('sync')
    const c = FULL && sh(`cp --sparse=always ${out('export.img')} ${out('cp.img')} && sync ${out('cp.img')}`)
    if (c) record('cp --sparse=always (+sync)', c.seconds, DATA)
    if (QEMU_IMG) {
      const q = sh(`qemu-img convert -O raw ${out('export.img')} ${out('qemu.img')} && sync ${out('qemu.img')}`)
      record('qemu-img convert -O raw (+sync)', q.seconds, DATA)
    }
    if (FULL && run === 1) {
      const same = sh(`cmp ${out('restore.img')} ${out('export.img')} && cmp ${out('cp.img')} ${out('export.img')} && echo same`).stdout.trim()
      if (same !== 'same') throw new Error('restore and export differ')
    }
    for (const f of ['cp.img', 'qemu.img', 'restore.img']) fs.rmSync(out(f), { force: true })
    // A store of its own per run: each receives the full stream, then (below) the increment.
    const d = run === 1 ? dst : `${dst}-${run}`
    if (run > 1) logdisk('create', d, '--size', String(SIZE))
    dsts.push(d)
    const rc = logdisk('receive', d, '--in', out('a.stream'))
    record('receive a (full)', rc.seconds, DATA)
    if (FULL) record('verify', logdisk('verify', src).seconds, DATA)
  }
  for (const f of ['export.img', 'a.stream']) fs.rmSync(out(f), { force: true })

  // 4 MiB of changes: 1024 single blocks scattered over the written data.
  const change = `
    const { openStore } = await import(${JSON.stringify(path.join(REPO, 'dist/src/app/open.js'))})
    const crypto = await import('node:crypto')
    const { store } = await openStore(${JSON.stringify(src)})
    for (let i = 0; i < 1024; i++) {
      const block = Math.floor(Math.random() * ${Math.floor(DATA / 4096)})
      await store.write(block * 4096, crypto.randomBytes(4096))
    }
    await store.flush(); await store.close()`
  run(process.execPath, ['--input-type=module', '-e', change])
  logdisk('snapshot', src, '--name', 'b')
  for (let run = 1; run <= RUNS; run++) {
    const si = logdisk('send', src, 'b', '--from', 'a', '--out', out('ab.stream'), '--force')
    record('send b --from a (4 MiB)', si.seconds, 4 * MiB)
    const ri = logdisk('receive', dsts[run - 1], '--in', out('ab.stream'))
    record('receive b (4 MiB)', ri.seconds, 4 * MiB)
    const d = logdisk('diff', src, 'a', 'b', '--json')
    record('diff a b (4 MiB)', d.seconds, 4 * MiB, `${JSON.parse(d.stdout).blocks} blocks`)
    const st = logdisk('status', src)
    record('status (opening the store)', st.seconds, 0, 'the fixed cost of any command on an unmounted store')
  }
  // The same increments on a store already open (as in the mount daemon): no start-up, no open.
  const inproc = `
    const { openStore } = await import(${JSON.stringify(path.join(REPO, 'dist/src/app/open.js'))})
    const { sendStreamTo } = await import(${JSON.stringify(path.join(REPO, 'dist/src/copy/send.js'))})
    const { diffSnapshots } = await import(${JSON.stringify(path.join(REPO, 'dist/src/copy/diff.js'))})
    const { store } = await openStore(${JSON.stringify(src)}, {}, [], 'read')
    let t0 = performance.now()
    await sendStreamTo(store, 'b', 'a', { out: ${JSON.stringify(out('ab2.stream'))} })
    const send = (performance.now() - t0) / 1000
    t0 = performance.now()
    await diffSnapshots(store, 'a', 'b')
    const diff = (performance.now() - t0) / 1000
    await store.close()
    console.log(JSON.stringify({ send, diff }))`
  for (let r = 1; r <= RUNS; r++) {
    fs.rmSync(out('ab2.stream'), { force: true })
    const ip = JSON.parse(run(process.execPath, ['--input-type=module', '-e', inproc]).stdout)
    record('send b --from a, store open', ip.send, 4 * MiB, 'in process')
    record('diff a b, store open', ip.diff, 4 * MiB, 'in process')
  }
  report()

  const cpRate = rows.find(x => x.what.startsWith('cp '))?.mbps ?? NaN
  const qRate = rows.find(x => x.what.startsWith('qemu-img'))?.mbps ?? NaN
  const ratio = (w) => rows.find(x => x.what.startsWith(w)).mbps
  const ratios = FULL ? ['restore', 'export', 'send a', 'receive a', 'verify'].map(w => ({ what: w, vsCp: ratio(w) / cpRate, vsQemu: ratio(w) / qRate })) : []
  if (FULL) console.log(`\nratio to cp --sparse=always / to qemu-img convert (medians of ${RUNS}):`)
  for (const x of ratios) console.log(`  ${x.what.padEnd(10)} ${x.vsCp.toFixed(2)}x  ${x.vsQemu.toFixed(2)}x`)
  const increments = ['send b --from a', 'receive b', 'diff a b ('].map(w => rows.find(x => x.what.startsWith(w)))
    .map(x => ({ what: x.what, seconds: x.seconds, max: x.max, met: x.seconds < INCREMENT_GOAL }))
  console.log(`\nincrements of 4 MiB against the goal of < ${INCREMENT_GOAL} s (median, slowest of ${RUNS}):`)
  for (const x of increments) console.log(`  ${x.what.padEnd(26)} ${x.seconds.toFixed(2)} s  ${x.max.toFixed(2)} s  ${x.met ? 'met' : 'NOT met'}`)

  const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19) + 'Z'
  fs.mkdirSync(RESULTS, { recursive: true })
  const meta = { steps: STEPS, when: new Date().toISOString(), commit: spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO, encoding: 'utf8' }).stdout.trim(), sizeBytes: SIZE, dataBytes: DATA, loadavg: os.loadavg(), cpus: os.cpus().length }
  fs.writeFileSync(path.join(RESULTS, `${stamp}-copies.json`), JSON.stringify({ ...meta, runs: RUNS, rows, ratios, increments }, null, 2) + '\n')
  const md = [
    `# Copy speeds, ${meta.when} (commit ${meta.commit})`, '',
    `${SIZE / 2 ** 30} GiB volume, ${DATA / 2 ** 30} GiB written${FULL ? '' : ' (COPIES_STEPS=incremental)'}; ${meta.cpus} CPUs, load average ${meta.loadavg.map(l => l.toFixed(2)).join(' ')} at the end (${loadAtStart} at the start); warm page cache; CLI wall time (start-up included); medians of ${RUNS} runs.`, '',
    '| step | seconds (median) | MB/s | runs | note |', '| --- | ---: | ---: | --- | --- |',
    ...rows.map(x => `| ${x.what} | ${x.seconds.toFixed(2)} | ${x.bytes ? x.mbps.toFixed(0) : ''} | ${x.runs.map(v => v.toFixed(2)).join(' ')} | ${x.note} |`), '',
    ...(FULL ? ['| copy | vs cp --sparse=always | vs qemu-img convert |', '| --- | ---: | ---: |', ...ratios.map(x => `| ${x.what} | ${x.vsCp.toFixed(2)}x | ${x.vsQemu.toFixed(2)}x |`), ''] : []),
    `| increment of 4 MiB | median | slowest | goal < ${INCREMENT_GOAL} s |`, '| --- | ---: | ---: | --- |',
    ...increments.map(x => `| ${x.what} | ${x.seconds.toFixed(2)} | ${x.max.toFixed(2)} | ${x.met ? 'met' : 'not met'} |`), ''
  ].join('\n')
  fs.writeFileSync(path.join(RESULTS, `${stamp}-copies.md`), md)
  console.log(`\nwrote ${path.join(RESULTS, `${stamp}-copies.md`)}`)
} finally {
  if (!KEEP) fs.rmSync(WORK, { recursive: true, force: true })
}
