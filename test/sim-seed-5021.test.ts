import t from 'tap'
import { SimulationWorker } from '../src/testing/simulation-worker'

/**
 * Found at the end of the session of 2026-12-02 by `SEEDS=60 SEED=5000 make simulate` (the
 * options drawn from the seed: 2 copies on 3 volumes, archive off, history kept forever):
 * seed 5021 fails in phase 5 with "the current image changed across a rebuild (blocks 60, 78,
 * 146, ...)": after compactions that move versions, a mirror repair, a drain of v0, a power
 * loss and clean reopens, deleting the index and rebuilding it from the log gives another
 * current image than the index had. It fails the same way on the code before this session
 * (4aac7c0). Not diagnosed yet: which of the rebuild's choices (the copy of a mirrored segment
 * it reads, a moved version's place, a freed entry) differs is open.
 */
t.setTimeout(600_000)
const sim = new SimulationWorker()
t.teardown(() => sim.close())
t.test('seed 5021: an index rebuild gives the same current image', async t => {
  const outcome = await sim.run(5021, {}).then(() => 'ok', (err: Error) => err.message.split('\n')[0])
  t.equal(outcome, 'ok', 'the seed passes', { todo: 'known defect, open: an index rebuild after compaction moves, a mirror repair and a drain of mirrored segments changes the current image' })
})
