#!/usr/bin/env node
// Runs every test file and ends with the line CI reads: "N passed, N failed".
// A "test" is one top-level test of a file (a t.test() or a top-level assertion); a file that
// dies outside any test (a crash, a timeout) counts as one failed test.
//
// The files run compiled, each as a plain `node dist/test/X.test.js` (tap's `t` prints TAP
// by itself), package.json's tap.jobs at a time (TEST_JOBS overrides), each bounded by its
// tap.timeout. Not through tap's runner: measured on this 2-core machine, the runner and its
// TypeScript loader (ts-node) cost each file about 5 s of CPU before its first assertion,
// against under 1 s this way; and running the runner with another plugin set rebuilds tap inside node_modules, which
// breaks a second run going at the same time. Source maps keep stack traces on the .ts lines.
// `npx tap test/X.test.ts` still runs one file through the loader while developing.
import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const tapConfig = JSON.parse(fs.readFileSync('package.json', 'utf8')).tap ?? {}
const JOBS = Number(process.env.TEST_JOBS ?? tapConfig.jobs ?? 2)
const TIMEOUT_S = Number(tapConfig.timeout ?? 900)
/** After the file's own timeout (tap fails the file and ends it), a hard stop. */
const KILL_AFTER_MS = (TIMEOUT_S + 60) * 1000

// A file killed on its timeout never runs its teardown: sweep what tests of this checkout
// left mounted, before (a run killed earlier) and after the suite.
// Every process of this run (tests and the daemons they mount) carries this run's id, so
// that a second run in the same checkout sweeps only its own leftovers and those of runs
// that are gone, never the mounts of a run still going.
process.env.LOGDISK_TEST_RUN = String(process.pid)
// Identities that read-only sends remember go to the user's cache directory
// (src/copy/identity-cache.ts): one of this run's, removed at the end, not the home's.
process.env.LOGDISK_CACHE_DIR = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-test-cache-'))
process.on('exit', () => fs.rmSync(process.env.LOGDISK_CACHE_DIR, { recursive: true, force: true }))
const sweep = () => spawnSync(process.execPath, ['scripts/sweep-test-mounts.mjs'], { stdio: 'inherit', timeout: 300_000 })
sweep()

// Only files whose test/*.test.ts exists run, so a compiled copy of a deleted test never does.
const sources = process.argv.slice(2).length > 0
  ? process.argv.slice(2)
  : fs.readdirSync('test').filter(f => f.endsWith('.test.ts')).sort().map(f => `test/${f}`)
const files = sources.map(f => {
  const compiled = path.join('dist', f.replace(/\.ts$/, '.js'))
  if (!fs.existsSync(compiled) || fs.statSync(compiled).mtimeMs < fs.statSync(f).mtimeMs) {
    console.error(`${compiled} is missing or older than ${f}: run make build (make test does)`)
    process.exit(2)
  }
  return { source: f, compiled }
})

let passed = 0
let failed = 0
/** Failing assertions marked todo: known defects still open. */
const todo = []
/** What failed, repeated just above the closing line: CI keeps only the tail of the output. */
const failures = []
let reported = 0
const running = new Set()

/**
 * Runs one file; prints its TAP output indented under one line for the file, as tap's runner
 * does. Resolves with the milliseconds it took.
 */
function runFile ({ source, compiled }, id) {
  return new Promise(resolve => {
    const started = Date.now()
    const child = spawn(process.execPath, ['--enable-source-maps', compiled], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, TAP_TIMEOUT: String(TIMEOUT_S), TAP_CHILD_ID: String(id) }
    })
    running.add(child)
    let out = ''
    let err = ''
    child.stdout.on('data', d => { out += d })
    child.stderr.on('data', d => { err += d })
    let killed = false
    const hardStop = setTimeout(() => {
      killed = true
      child.kill('SIGTERM')
      setTimeout(() => child.kill('SIGKILL'), 10_000).unref()
    }, KILL_AFTER_MS)
    child.on('close', (code, signal) => {
      clearTimeout(hardStop)
      running.delete(child)
      let ok = 0
      let notOk = 0
      for (const line of out.split('\n')) {
        // An assertion of a known defect, still open, marked { todo: reason }: tap does not
        // fail the test for it; listed at the end, so it is never silently forgotten.
        if (/^\s*not ok \d+ .*# TODO/.test(line)) { todo.push(`${source}: ${line.trim().replace(/^not ok \d+ - /, '')}`); continue }
        const m = /^(not )?ok \d+/.exec(line)
        if (m) m[1] ? notOk++ : ok++
        if (m?.[1]) failures.push(`${source}: ${line.trim()}`)
      }
      const clean = code === 0 && !killed
      // A file that failed outside any test (a crash, a timeout) counts as one failed test.
      if (!clean && notOk === 0) {
        notOk = 1
        failures.push(`${source}: ${killed ? `killed after ${KILL_AFTER_MS / 1000} s` : `exited with ${signal ?? code}`}`)
      }
      passed += ok
      failed += notOk
      const lines = [`# Subtest: ${source}`, ...out.trimEnd().split('\n').map(l => `    ${l}`)]
      if (err.trim()) lines.push(...err.trimEnd().split('\n').map(l => `    # stderr: ${l}`))
      if (killed) lines.push(`    # killed after ${KILL_AFTER_MS / 1000} s`)
      else if (!clean) lines.push(`    # exited with ${signal ?? code}`)
      lines.push(`${notOk === 0 ? 'ok' : 'not ok'} ${++reported} - ${source} # time=${Date.now() - started}ms`, '')
      process.stdout.write(lines.join('\n') + '\n')
      resolve(Date.now() - started)
    })
  })
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    for (const child of running) child.kill('SIGTERM')
    sweep()
    process.exit(1)
  })
}

// The longest files start first, so that the last minutes do not leave a slot idle while one
// long file runs alone. Their seconds come from test/durations.json, measured in a full run on
// the 2-core VM (`TEST_RECORD_DURATIONS=1 make test` rewrites it); a file it does not list yet
// counts as a short one.
const DURATIONS_FILE = 'test/durations.json'
const durations = fs.existsSync(DURATIONS_FILE) ? JSON.parse(fs.readFileSync(DURATIONS_FILE, 'utf8')) : {}
const nameOf = f => path.basename(f.source, '.test.ts')
const rank = f => -(durations[nameOf(f)] ?? 0)
const measured = {}
const queue = files.map((f, i) => [f, i + 1]).sort((a, b) => rank(a[0]) - rank(b[0]) || a[1] - b[1])
await Promise.all(Array.from({ length: Math.min(JOBS, queue.length) }, async () => {
  while (queue.length > 0) {
    const [file, id] = queue.shift()
    measured[nameOf(file)] = Math.round(await runFile(file, id) / 1000)
  }
}))
if (process.env.TEST_RECORD_DURATIONS === '1' && failed === 0) {
  const sorted = Object.fromEntries(Object.entries({ ...durations, ...measured }).filter(([name]) => fs.existsSync(`test/${name}.test.ts`)).sort((a, b) => b[1] - a[1]))
  fs.writeFileSync(DURATIONS_FILE, JSON.stringify(sorted, null, 2) + '\n')
}
sweep()
if (todo.length > 0) console.log(`\n${todo.length} assertions of known defects still open (marked todo, not counted):\n${todo.map(l => `  ${l}`).join('\n')}`)
if (failures.length > 0) console.log(`\nfailed:\n${failures.map(l => `  ${l}`).join('\n')}`)
console.log(`\n${passed} passed, ${failed} failed`)
process.exit(failed === 0 ? 0 : 1)
