import t from 'tap'
import { SimulationWorker } from '../src/testing/simulation-worker'

/**
 * Found while looking for new seeds for simulation.test's pages-crash group (options below):
 * seed 127 fails in phase 4 with "verify: index: block 31 should be at log position 665888,
 * LevelDB says 4503599627497472" (the baseline's position): the index and the in-memory map
 * point block 31 at the baseline while the log holds a newer version of it. It fails the same
 * way on the code before this session's changes (4aac7c0 plus only the memory flags).
 * Whether a read can return the older version (data loss) or only verify's judgement is
 * wrong is not pinned down yet.
 */
t.setTimeout(600_000)
const sim = new SimulationWorker()
t.teardown(() => sim.close())
t.test('seed 127, power loss keeps any unsynced pages: index and log agree', async t => {
  const outcome = await sim.run(127, { segmentBlocks: 1032, writevMaxBytes: 16384, crashPages: true, bringBack: false, savedMap: false })
    .then(() => 'ok', (err: Error) => err.message.split('\n')[0])
  t.equal(outcome, 'ok', 'the seed passes', { todo: 'known defect, open: after a power loss (pages model) the index points block 31 at the baseline while the log holds a newer version' })
})
