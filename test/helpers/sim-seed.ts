import t from 'tap'
import type { SimulationOptions } from '../../src/testing/simulation'
import { SimulationWorker } from '../../src/testing/simulation-worker'

/**
 * One test that runs simulation `seed` with `opts` (in a worker thread: SimulationWorker) and
 * asserts it passes; a failure shows the first line of the simulation's error.
 */
export function seedPasses (seed: number, opts: SimulationOptions, title: string): void {
  t.setTimeout(600_000)
  const sim = new SimulationWorker()
  t.teardown(() => sim.close())
  t.test(title, async t => {
    const outcome = await sim.run(seed, opts).then(() => 'ok', (err: Error) => err.message.split('\n')[0])
    t.equal(outcome, 'ok', 'the seed passes')
  })
}
