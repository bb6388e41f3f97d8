import type { Test } from 'tap'
import { nodeFileLayer, type FileHandle, type FileLayer } from '../../src/store/file-layer'
import { Store } from '../../src/store/store'
import { scratchDir, tagBlock } from './sim-layer'

const B = 4096

interface Lock { queued: number }
/** The store's append lock (its `queued` count says when a section has queued on it). */
export const lockOf = (s: Store): Lock => (s as unknown as { p: { log: { lock: Lock } } }).p.log.lock

/** Turns of the event loop until `ok()`; throws naming `what` if it never comes. */
export async function until (what: string, ok: () => boolean): Promise<void> {
  for (let i = 0; i < 100_000; i++) {
    if (ok()) return
    await new Promise(resolve => setImmediate(resolve))
  }
  throw new Error(`never came: ${what}`)
}

/**
 * A store of 64 blocks of 4 KiB whose log writevs wait while held: `holdLock` starts a write
 * that takes the append lock and keeps it in its writev until `release` (which returns that
 * write), so a test queues sections behind it in an order it chooses, with no timing.
 */
export async function heldLockStore (t: Test, prefix: string): Promise<{ s: Store, holdLock: () => Promise<{ written: Promise<void>, release: () => Promise<void> }> }> {
  let held: Promise<void> | undefined
  let free = (): void => {}
  let writevs = 0
  const layer: FileLayer = {
    ...nodeFileLayer,
    open: async (file: string, create: boolean): Promise<FileHandle> => {
      const h = await nodeFileLayer.open(file, create)
      if (!file.endsWith('.log')) return h
      return new Proxy(h, {
        get (target, prop, receiver) {
          const v = Reflect.get(target, prop, receiver)
          if (typeof v !== 'function') return v
          if (prop !== 'writev') return v.bind(target)
          return async (buffers: Buffer[], position: number) => {
            writevs++
            if (held !== undefined) await held
            return v.call(target, buffers, position)
          }
        }
      })
    }
  }
  const dir = scratchDir(t, prefix)
  await Store.create(dir, { sizeBytes: 64 * B, blockBytes: B, segmentBytes: 258 * B })
  const s = await Store.open(dir, { fileLayer: layer, checkpointIntervalMs: 0, historyKeepMs: 0 })
  t.teardown(() => s.close().catch(() => undefined))
  return {
    s,
    holdLock: async () => {
      held = new Promise<void>(resolve => { free = resolve })
      const before = writevs
      const written = s.write(0, tagBlock('hold', B))
      await until('the holding write in its writev', () => writevs > before)
      return { written, release: async () => { held = undefined; free(); await written } }
    }
  }
}
