#!/usr/bin/env node
// Runs every test with tap and ends with the line CI reads: "N passed, N failed".
// A "test" is one top-level test of a file (a t.test() or a top-level assertion); a file that
// dies outside any test (a crash, a timeout) counts as one failed test.
import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'

// A file that tap kills on its timeout never runs its teardown: sweep what tests of this
// checkout left mounted, before (a run killed earlier) and after the suite.
// Every process of this run (tap, tests, the daemons they mount) carries this run's id, so
// that a second run in the same checkout sweeps only its own leftovers and those of runs
// that are gone, never the mounts of a run still going.
process.env.LOGDISK_TEST_RUN = String(process.pid)
const sweep = () => spawnSync(process.execPath, ['scripts/sweep-test-mounts.mjs'], { stdio: 'inherit', timeout: 300_000 })
sweep()

// The tests run compiled: `make build` compiles test/ with src/ into dist/, and tap runs
// dist/test/*.test.js without its TypeScript loader. Measured: ts-node costs each test file
// about 4 s of CPU before its first assertion (62 files, on 2 cores: minutes of the suite);
// source maps keep stack traces pointing at the .ts lines. Only files whose test/*.test.ts
// exists run, so a compiled copy of a deleted test never does.
const sources = process.argv.slice(2).length > 0
  ? process.argv.slice(2)
  : fs.readdirSync('test').filter(f => f.endsWith('.test.ts')).sort().map(f => `test/${f}`)
const files = sources.map(f => {
  const compiled = path.join('dist', f.replace(/\.ts$/, '.js'))
  if (!fs.existsSync(compiled) || fs.statSync(compiled).mtimeMs < fs.statSync(f).mtimeMs) {
    console.error(`${compiled} is missing or older than ${f}: run make build (make test does)`)
    process.exit(2)
  }
  return compiled
})
const args = ['tap', '--reporter=tap', '--plugin=!@tapjs/typescript', '--node-arg=--enable-source-maps', ...files]
const child = spawn('npx', args, { stdio: ['ignore', 'pipe', 'inherit'] })
let passed = 0
let failed = 0
let fileFailures = 0
let pending = ''

function count (line) {
  let m = /^ {4}(not )?ok \d+/.exec(line)
  if (m) {
    if (m[1]) { failed++; fileFailures++ } else passed++
    return
  }
  m = /^(not )?ok \d+ - /.exec(line)
  if (m) {
    // Top-level line of a whole file: a failing file with no failing test inside still fails.
    if (m[1] && fileFailures === 0) failed++
    fileFailures = 0
  }
}

child.stdout.on('data', chunk => {
  process.stdout.write(chunk)
  pending += chunk
  const lines = pending.split('\n')
  pending = lines.pop()
  lines.forEach(count)
})
child.on('close', code => {
  if (pending) count(pending)
  sweep()
  console.log(`\n${passed} passed, ${failed} failed`)
  process.exit(code === 0 && failed === 0 ? 0 : 1)
})
