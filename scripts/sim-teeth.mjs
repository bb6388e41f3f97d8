#!/usr/bin/env node
// Shows that the simulation has teeth: for each data-loss fix of issue 9, builds a copy of the
// engine with that one fix taken back out, runs simulation seeds on it until one fails, and
// prints the first failing seed (or that none of SEEDS failed). Usage:
//   node scripts/sim-teeth.mjs [SEEDS=200] [ONLY=defect 3]
// Each "revert" is an exact text replacement in src/; it fails loudly when the code it undoes
// has changed, so the list stays honest as the engine moves.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const SEEDS = Number(process.env.SEEDS ?? 200)
const reverts = {
  'defect 1: passes judge history up to a fence': [
    ['src/store/compaction-pass.ts', 'let analysis = await analyzeVersions(db.history(), cuts(), range, fence.seq, await history.windowStart(fence))', 'let analysis = await analyzeVersions(db.history(), cuts(), range, Number.MAX_SAFE_INTEGER, await history.windowStart(fence))'],
    ['src/store/compaction-pass.ts', 'for await (const [seq, e] of db.entries(1, fence.seq)) {', 'for await (const [seq, e] of db.entries(1, p.log.seq)) {'],
    ['src/store/compaction-pass.ts', 'if (!fence.mayTouchEntry(seq, e.position) || !segments.hasLocal(id)', 'if (id >= p.log.current.id || !segments.hasLocal(id)'],
    ['src/store/compaction-pass.ts', 'const sealed = segments.ids.filter(id => fence.mayTouchSegment(id))\n', 'const sealed = segments.ids.filter(id => id < p.log.current.id)\n']
  ],
  'defect 2: a dropped mirror copy is recorded': [
    ['src/store/segment-table.ts', 'if (!volumes?.includes(volume)) return\n', 'if (!volumes || id >= 0) return // reverted\n'],
    ['src/store/recovery.ts', "const recorded = (records.get(id)?.volumes ?? []).filter(v => found.includes(v))", 'const recorded = found']
  ],
  'defect 3: segment records keep the archived flag': [
    ['src/store/segment-table.ts', 'const archived = this.archivedIds.has(id) || undefined\n    this.p.index.batch.segments.set', "const archived = state === 'inactive' ? undefined : this.archivedIds.has(id) || undefined\n    this.p.index.batch.segments.set"],
    ['src/store/store-open.ts', "const archived = new Set([...records].filter(([, r]) => r.archived === true).map(([id]) => id))", "const archived = new Set([...records].filter(([, r]) => r.archived === true && r.state !== 'inactive').map(([id]) => id))"]
  ],
  'defect 4: the horizon is in the log': [
    ['src/store/history.ts', '    await log.lock.run(() => log.appendMarkerLocked(EntryKind.history, { horizon }))\n', '']
  ],
  'defect 5: a baseline merge never overwrites history': [
    ['src/store/baseline-pass.ts', 'const overwrite = visible.filter(v => inBaseline.has(v.block))', 'const overwrite: typeof visible = []']
  ],
  'issue 14: passes leave segments not yet replicated alone (retainFrom)': [
    ['src/store/life-cycle.ts', 'new PassFence(log.seq, Math.min(log.current.id, this.p.opts.retainFrom?.() ?? Infinity), this.p.config.segmentBytes)', 'new PassFence(log.seq, log.current.id, this.p.config.segmentBytes)']
  ]
}

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
        await simulate(seed)
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
