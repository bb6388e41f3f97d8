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
 * (ab83196).
 *
 * Fixed (branch fullpool): it was the history marker (History.raiseHorizon, appended before
 * anything is freed); writes had filled the current segment to its last byte. Foreground
 * appends now leave a maintenance reserve free at the end of every segment (pass-fence.ts
 * MAINTENANCE_RESERVE_BYTES), which the history marker may use, so it never needs a new
 * segment in a full pool. test/full-pool-reserve.test.ts checks the same without the
 * simulation (writes refused, compaction frees, writes work again, reopen, crash).
 */
t.setTimeout(600_000)
const sim = new SimulationWorker()
t.teardown(() => sim.close())
t.test('seed 7300024: compaction in a full pool', async t => {
  const outcome = await sim.run(7300024, {}).then(() => 'ok', (err: Error) => err.message.split('\n')[0])
  t.equal(outcome, 'ok', 'the seed passes (compaction never fails with NO_SPACE)')
})
