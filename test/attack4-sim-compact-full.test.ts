import t from 'tap'
import { SimulationWorker } from '../src/testing/simulation-worker'

/**
 * Found while running `SEEDS=100 SEED=7300000 node scripts/simulate.mjs` for attack4 (the
 * prefix crash model, options drawn from the seed): seed 7300024 fails in phase 10 with
 * "compact: unexpected NO_SPACE: the simulated pool has no room for segment 4". A compaction
 * of snapshot s2 runs while the pool is full; compaction is what gives room back, yet it
 * needs a new segment itself: the NO_SPACE comes from LogAppender.appendMarkerLocked rolling
 * onto a new segment (the current one has no room for the marker; seen with a stack hook on
 * SimHome.place; which of compaction's markers it is, the history marker that raises the
 * horizon before anything is freed or another, was not pinned down), so a full pool refuses
 * the one operation that could empty it. It fails the same way on the code before attack4's changes
 * (ab83196); not fixed here (no time to change what compaction appends when the pool is full).
 */
t.setTimeout(600_000)
const sim = new SimulationWorker()
t.teardown(() => sim.close())
t.test('seed 7300024: compaction in a full pool', async t => {
  const outcome = await sim.run(7300024, {}).then(() => 'ok', (err: Error) => err.message.split('\n')[0])
  t.equal(outcome, 'ok', 'the seed passes (compaction never fails with NO_SPACE)', { todo: 'known defect, open: compaction in a full pool needs a new segment for its own marker and fails with NO_SPACE' })
})
