#!/usr/bin/env node
// Shows that the simulation has teeth: for each data-loss fix of issue 9, builds a copy of the
// engine with that one fix taken back out, runs simulation seeds on it until one fails, and
// prints the first failing seed (or that none of SEEDS failed). Usage:
//   node scripts/sim-teeth.mjs [SEEDS=200] [ONLY=defect 3]
// Each "revert" (scripts/sim-teeth-reverts.mjs) is an exact text replacement in src/; it fails
// loudly when the code it undoes has changed, and test/sim-teeth.test.ts checks the same on
// every `make test`. `make teeth` runs this (about 90 s on the 2-CPU VM: all six caught).
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { reverts, simulateOptions } from './sim-teeth-reverts.mjs'

const SEEDS = Number(process.env.SEEDS ?? 200)

const root = process.cwd()
const results = []
// ONLY=text runs only the reverts whose name contains it.
for (const [name, edits] of Object.entries(reverts).filter(([n]) => !process.env.ONLY || n.includes(process.env.ONLY))) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-teeth-'))
  try {
    for (const f of ['src', 'tsconfig.json', 'package.json']) fs.cpSync(path.join(root, f), path.join(dir, f), { recursive: true })
    fs.symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'))
    for (const [file, from, to] of edits) {
      const p = path.join(dir, file)
      const text = fs.readFileSync(p, 'utf8')
      if (!text.includes(from)) throw new Error(`${name}: ${file} no longer contains the fix to revert: ${from.slice(0, 80)}`)
      fs.writeFileSync(p, text.replace(from, to))
    }
    execFileSync('npx', ['tsc', '-p', '.'], { cwd: dir, stdio: 'inherit' })
    const { simulate } = await import(path.join(dir, 'dist/src/testing/simulation.js'))
    let failing
    for (let seed = 1; seed <= SEEDS && failing === undefined; seed++) {
      try {
        await simulate(seed, simulateOptions[name] ?? {})
      } catch (err) {
        failing = { seed, why: String(err.message).split('\n')[0] }
      }
    }
    results.push([name, failing])
    console.log(failing ? `${name} reverted: seed ${failing.seed} fails: ${failing.why}` : `${name} reverted: none of seeds 1-${SEEDS} failed`)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}
process.exit(results.every(([, f]) => f) ? 0 : 1)
