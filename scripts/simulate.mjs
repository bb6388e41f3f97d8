#!/usr/bin/env node
// make simulate SEEDS=N [SEED=first] [PHASES=n] [PAGES=1] [REBUILDS=1] [DEADBATCH=n] [HOLD=n] [SHORT=1] [RESIZE=1]: runs N seeds of the
// deterministic simulation (src/testing/simulation.ts) and prints each failing seed with its
// trace. Exit 1 on a failure. PAGES=1: power losses keep any mix of unsynced pages, with
// writevs in flight (as simulation.test's "any unsynced pages" seeds); REBUILDS=1: the index
// is deleted after half the power losses (a full rebuild from the log); DEADBATCH=n:
// compactions that find more than n dead versions walk the history again and commit their
// removal n at a time; HOLD=n: the history walks read a chunk of more than n versions again
// by groups of blocks. SHORT=1: reads stop short of what they asked for (SimFileLayer.shortReads).
// RESIZE=1: the volume grows and shrinks among the other activities (SimulationOptions.resize;
// its own rng: without it every seed replays as before).
// SIM_TRACE=1 prints the trace as it runs; SIM_LOG=1 adds the store's
// own log lines to it.
import { simulate } from '../dist/src/testing/simulation.js'

const seeds = Number(process.env.SEEDS ?? 20)
const first = Number(process.env.SEED ?? Math.floor(Math.random() * 1e9))
const phases = process.env.PHASES ? Number(process.env.PHASES) : undefined
const pages = process.env.PAGES === '1' ? { segmentBlocks: 1032, writevMaxBytes: 16384, crashPages: true } : {}
const rebuilds = process.env.REBUILDS === '1' ? { rebuildAfterPowerLoss: true } : {}
const deadBatch = process.env.DEADBATCH ? { compactionDeadBatch: Number(process.env.DEADBATCH) } : {}
const hold = process.env.HOLD ? { historyHoldVersions: Number(process.env.HOLD) } : {}
const short = process.env.SHORT === '1' ? { shortReads: true } : {}
const resize = process.env.RESIZE === '1' ? { resize: true } : {}
let failed = 0
let steps = 0
const started = Date.now()
for (let i = 0; i < seeds; i++) {
  const seed = first + i
  try {
    const r = await simulate(seed, { ...pages, ...rebuilds, ...deadBatch, ...hold, ...short, ...resize, phases, storeLog: process.env.SIM_LOG === '1', trace: process.env.SIM_TRACE ? line => console.error(`  ${line}`) : undefined })
    steps += r.steps
    const ops = Object.values(r.ops).reduce((a, b) => a + b, 0)
    console.log(`seed ${seed}: ok (${r.phases} phases, ${ops} operations, ${r.steps} I/O steps, ${r.crashes} power losses, ${r.rebuilds} rebuilds, ${r.remounts} remounts after a failed write-back, ${r.unflushedCuts} unflushed cuts, ${r.syncOps.writes}/${r.syncOps.reads} synchronous writes/reads, ${r.faultsInjected} faults; ${r.config})${process.env.RESIZE === '1' ? `; resizes: ${['grow', 'shrink', 'grew', 'shrank', 'shrink refused', 'refused past the end'].map(k => `${r.ops[k] ?? 0} ${k}`).join(', ')}` : ''}`)
  } catch (err) {
    failed++
    console.log(`seed ${seed}: FAILED\n${err?.stack ?? err}`)
  }
}
console.log(`${seeds - failed} seeds passed, ${failed} failed (${steps} I/O steps in ${((Date.now() - started) / 1000).toFixed(1)} s); rerun one with SEEDS=1 SEED=<seed>`)
process.exit(failed > 0 ? 1 : 0)
