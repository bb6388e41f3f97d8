import t from 'tap'
import { SimulationWorker } from '../src/testing/simulation-worker'

/**
 * Two seeds of `PAGES=1 REBUILDS=1 node scripts/simulate.mjs` (2 copies per segment, power
 * losses that keep any subset of each file's unsynced pages) that found the defect of
 * attack4-mirror-pages: recovery replayed a segment from its first copy while another copy,
 * at the same length, held torn pages of the same entries; MirroredHandle.reconcile compared
 * lengths only. Seed 7200207 then read a checksum failure from the other copy (after a mirror
 * repair copied it); 7200224 saw a sealed segment change after it was sealed (the copy was
 * rewritten by the repair). Both run with the options simulate.mjs gives them.
 */
const SEEDS = [7200207, 7200224]

t.setTimeout(600_000)
const sim = new SimulationWorker()
t.teardown(() => sim.close())
t.test(`pages crashes with mirrored segments: ${SEEDS.length} seeds`, async t => {
  for (const seed of SEEDS) {
    const r = await sim.run(seed, { segmentBlocks: 1032, writevMaxBytes: 16384, crashPages: true, rebuildAfterPowerLoss: true })
    t.pass(`seed ${seed}: ${r.crashes} power losses, ${r.rebuilds} rebuilds (${r.config})`)
  }
})
