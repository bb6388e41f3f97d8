import path from 'node:path'
import type { Test } from 'tap'
import { MemoryLevel } from 'memory-level'
import type { FileLayer } from '../../src/store/file-layer'
import { IndexDb, type LevelDb } from '../../src/store/index-db'
import type { SegmentHome } from '../../src/store/segment-home'
import { Store } from '../../src/store/store'
import { Rng } from '../../src/testing/rng'
import { SimFileLayer } from '../../src/testing/sim-file-layer'
import { SimHome } from '../../src/testing/sim-home'
import { scratchDir, tagBlock } from './sim-layer'

/**
 * A store on the simulated disk whose segments have two copies (a simulated pool of two
 * volumes) and whose index is an in-memory LevelDB that outlives the store, so a test can
 * make a power loss (`sim.crash`) and open it again as it was; `layerOver` puts a layer of the
 * test's between the store and the simulated disk.
 */
export async function mirroredSimStore (t: Test, name: string, seed: number, geometry: { sizeBytes: number, blockBytes: number, segmentBytes: number }, layerOver: (sim: SimFileLayer) => FileLayer = sim => sim): Promise<{ dir: string, sim: SimFileLayer, rng: Rng, home: SimHome, open: () => Promise<Store>, loseIndex: () => Promise<void> }> {
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
  const fileLayer = layerOver(sim)
  const open = (): Promise<Store> => Store.open(dir, { fileLayer, home, openIndex, checkpointIntervalMs: 0 })
  /** Empties the index (a store closed first): the next open rebuilds it from the log. */
  const loseIndex = async (): Promise<void> => {
    if (level.status === 'closed') await level.open()
    await level.clear()
  }
  return { dir, sim, rng, home, open, loseIndex }
}

/**
 * Three volumes v1-v3 under `dir` on the simulated disk, every new segment placed on v1 and v2
 * (two copies), the store on `fileLayer` (the simulated disk itself, or a layer over it that
 * stages a race), and a model of what the volume must read: `put` writes a tagged block to
 * both.
 */
export async function threeVolumeStore (dir: string, sim: SimFileLayer, fileLayer: FileLayer, geometry: { sizeBytes: number, blockBytes: number, segmentBytes: number }): Promise<{ volumes: string[], open: () => Promise<Store>, model: Buffer, put: (s: Store, block: number, tag: string) => Promise<void> }> {
  const volumes = ['v1', 'v2', 'v3']
  const home: SegmentHome = {
    dirOf: v => path.join(dir, `vol-${v}`),
    volumes: () => volumes,
    place: async () => ['v1', 'v2'],
    occupied () {},
    vacated () {},
    stillSuits: vs => vs.length === 2
  }
  await Store.create(dir, geometry, sim)
  const open = (): Promise<Store> => Store.open(dir, { fileLayer, home, checkpointIntervalMs: 0 })
  const model = Buffer.alloc(geometry.sizeBytes)
  const B = geometry.blockBytes
  const put = async (s: Store, block: number, tag: string): Promise<void> => {
    const data = tagBlock(tag, B)
    await s.write(block * B, data)
    data.copy(model, block * B)
  }
  return { volumes, open, model, put }
}

/**
 * `flushedBlocks` blocks written at 0, flushed and checkpointed (replay after a power loss
 * starts past them), then two writes of `unflushedBlocks` blocks (at blocks 128 and 256) no
 * flush covers: the bytes flushed, and where the first unflushed entry starts in its segment
 * (where a test tears it).
 */
export async function flushedThenUnflushed (store: Store, rng: Rng, blockBytes: number, segmentBytes: number, flushedBlocks: number, unflushedBlocks: number): Promise<{ flushed: Buffer, torn: number }> {
  const flushed = rng.bytes(flushedBlocks * blockBytes)
  await store.write(0, flushed)
  await store.flush()
  await store.checkpoint()
  const torn = store.status().index.position % segmentBytes
  await store.write(128 * blockBytes, rng.bytes(unflushedBlocks * blockBytes))
  await store.write(256 * blockBytes, rng.bytes(unflushedBlocks * blockBytes))
  return { flushed, torn }
}
