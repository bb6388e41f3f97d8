import path from 'node:path'
import type { Test } from 'tap'
import { MemoryLevel } from 'memory-level'
import { IndexDb, type LevelDb } from '../../src/store/index-db'
import { Store } from '../../src/store/store'
import { Rng } from '../../src/testing/rng'
import { SimFileLayer } from '../../src/testing/sim-file-layer'
import { SimHome } from '../../src/testing/sim-home'
import { scratchDir } from './sim-layer'

/**
 * A store on the simulated disk whose segments have two copies (a simulated pool of two
 * volumes) and whose index is an in-memory LevelDB that outlives the store, so a test can
 * make a power loss (`sim.crash`) and open it again as it was.
 */
export async function mirroredSimStore (t: Test, name: string, seed: number, geometry: { sizeBytes: number, blockBytes: number, segmentBytes: number }): Promise<{ dir: string, sim: SimFileLayer, rng: Rng, home: SimHome, open: () => Promise<Store> }> {
  const dir = scratchDir(t, name)
  const sim = new SimFileLayer()
  const rng = new Rng(seed)
  const home = new SimHome(path.join(dir, 'pool'), rng, 2, 100, 2)
  const level = new MemoryLevel({ keyEncoding: 'buffer', valueEncoding: 'buffer' })
  const openIndex = async (): Promise<IndexDb> => {
    if (level.status === 'closed') await level.open()
    return IndexDb.openLevel(level as unknown as LevelDb)
  }
  await Store.create(dir, geometry, sim)
  const open = (): Promise<Store> => Store.open(dir, { fileLayer: sim, home, openIndex, checkpointIntervalMs: 0 })
  return { dir, sim, rng, home, open }
}
