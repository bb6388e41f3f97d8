// A store on a small simulated pool that writes fill to the last byte (full-pool-reserve and
// full-pool-baseline): a seeded scheduler, file layer, index storage and pool of
// CAPACITY_SEGMENTS segments per volume, the model of every block written, and one-block writes
// (one entry each: it lands whole or not at all, so the model is exact).
import path from 'node:path'
import type { Test } from 'tap'
import { isLogdiskError } from '../../src/errors'
import { Store } from '../../src/store/store'
import { Rng } from '../../src/testing/rng'
import { SimFileLayer } from '../../src/testing/sim-file-layer'
import { SimHome } from '../../src/testing/sim-home'
import { SimIndexStorage } from '../../src/testing/sim-index'
import { SimScheduler } from '../../src/testing/sim-scheduler'
import { scratchDir } from './sim-layer'

export const B = 4096
export const SEGMENT = 258 * B // about the smallest segment for 4 KiB blocks (as the simulation's)
export const CAPACITY_SEGMENTS = 3 // per volume

export interface PoolRig {
  sched: SimScheduler
  sim: SimFileLayer
  indexes: SimIndexStorage
  home: SimHome
  rng: Rng
  model: Buffer
  drive: <T>(p: Promise<T>) => Promise<T>
  open: () => Promise<Store>
}

/**
 * Creates a store of `blocks` blocks in a scratch dir named `name`. history.keep=0: compaction
 * and a merge at "now" free every superseded version (each logging a history marker first).
 */
export async function fullPoolRig (t: Test, name: string, seed: number, copies: number, blocks: number): Promise<PoolRig> {
  const dir = scratchDir(t, name)
  const sched = new SimScheduler(new Rng(seed ^ 0x5eed))
  const sim = new SimFileLayer(sched)
  const indexes = new SimIndexStorage(sched)
  const rng = new Rng(seed)
  const home = new SimHome(path.join(dir, 'pool'), rng, copies, CAPACITY_SEGMENTS, copies)
  const drive = async <T>(p: Promise<T>): Promise<T> => {
    await sched.run(p)
    return p
  }
  const open = (): Promise<Store> => Store.open(dir, { fileLayer: sim, home, clock: sched.clock, openIndex: indexes.open, checkpointIntervalMs: 0, historyKeepMs: 0 })
  await drive(Store.create(dir, { sizeBytes: blocks * B, blockBytes: B, segmentBytes: SEGMENT }, sim))
  return { sched, sim, indexes, home, rng, model: Buffer.alloc(blocks * B), drive, open }
}

/** Writes one random block at `block`; into the model when it lands. Returns false on NO_SPACE. */
export async function writeBlock (r: PoolRig, store: Store, block: number): Promise<boolean> {
  const data = r.rng.bytes(B)
  try {
    await r.drive(store.write(block * B, data))
  } catch (err) {
    if (isLogdiskError(err, 'NO_SPACE')) return false
    throw err
  }
  data.copy(r.model, block * B)
  return true
}

/** Bytes free at the end of the current segment. */
export function roomLeft (store: Store): number {
  return SEGMENT - store.status().index.position % SEGMENT
}

/**
 * Runs `pass` (of `store`) until the power fails after `crashAfterSteps` I/O steps, then drops
 * the store, loses what the disks had not synced (any mix of pages, seeded by the step) and
 * brings the power back. Returns whether the power failed while the pass ran.
 */
export async function losePowerDuring (r: PoolRig, store: Store, pass: Promise<unknown>, crashAfterSteps: number): Promise<boolean> {
  pass.catch(() => undefined)
  const run = await r.sched.run(pass, { crashAfterSteps })
  await r.drive(store.abandon())
  const crashRng = new Rng(crashAfterSteps)
  r.sim.crash(crashRng)
  r.indexes.crash(crashRng)
  r.sched.restorePower()
  r.home.resetAccounting()
  return run.powerLost
}
