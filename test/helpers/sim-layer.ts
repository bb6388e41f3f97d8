import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { Test } from 'tap'
import type { FileHandle, FileLayer } from '../../src/store/file-layer'
import type { SegmentHome } from '../../src/store/segment-home'
import { Store } from '../../src/store/store'
import type { Rng } from '../../src/testing/rng'
import { SimFileLayer } from '../../src/testing/sim-file-layer'

/**
 * A file layer over the simulated disk that passes every call through: a test extends it and
 * overrides the calls it holds, counts or fails (a segment's open, a writev, a datasync).
 */
export class PassThroughLayer implements FileLayer {
  constructor (readonly sim: SimFileLayer) {}
  open (file: string, create: boolean): Promise<FileHandle> { return this.sim.open(file, create) }
  list (dir: string): Promise<string[]> { return this.sim.list(dir) }
  remove (file: string): Promise<void> { return this.sim.remove(file) }
  rename (from: string, to: string): Promise<void> { return this.sim.rename(from, to) }
  mkdirp (dir: string): Promise<void> { return this.sim.mkdirp(dir) }
  syncDir (dir: string): Promise<void> { return this.sim.syncDir(dir) }
  punchHole (file: string, offset: number, length: number): Promise<void> { return this.sim.punchHole(file, offset, length) }
}

/** `h`'s calls passed through, with `datasync` replaced: a test holds, counts or races it. */
export function withDatasync (h: FileHandle, datasync: () => Promise<void>): FileHandle {
  return {
    read: (buf, off, len, pos) => h.read(buf, off, len, pos),
    writev: (bufs, pos) => h.writev(bufs, pos),
    truncate: len => h.truncate(len),
    size: () => h.size(),
    close: () => h.close(),
    datasync
  }
}

/** The FileHandle calls made at once (IoOptions.inline): they throw where the others reject. */
const SYNC_CALLS = new Set<PropertyKey>(['readNow', 'writevNow'])

/**
 * `h` with its method `op` failing with EIO (`message`) on each call for which `take()`
 * says so; a `take` that disarms itself makes the failure happen once.
 */
export function failingHandle (h: FileHandle, op: keyof FileHandle, take: () => boolean, message: string): FileHandle {
  return new Proxy(h, {
    get (target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver)
      if (typeof v !== 'function') return v
      const method = v.bind(target)
      if (prop !== op) return method
      return (...args: unknown[]) => {
        if (!take()) return method(...args)
        const err = Object.assign(new Error(message), { code: 'EIO' })
        if (SYNC_CALLS.has(prop)) throw err
        return Promise.reject(err)
      }
    }
  })
}

/** A block of `blockBytes` that starts with `tag` padded with dots (what a test reads back). */
export function tagBlock (tag: string, blockBytes: number): Buffer {
  const b = Buffer.alloc(blockBytes)
  b.write(tag.padEnd(32, '.'))
  return b
}

/** Seals the current segment (the log appender's roll): the one made ahead becomes current, empty. */
export async function sealCurrent (store: Store): Promise<void> {
  const current = store.logSegments().find(s => s.state === 'current')!.id
  await (store as unknown as { p: { log: { seal: (id: number) => Promise<void> } } }).p.log.seal(current)
}

/**
 * Writes tagged filler blocks (`from` to `from + 199`, round and round) until the current
 * segment rolls; returns how many.
 */
export async function fillSegment (store: Store, from: number, tag: string): Promise<number> {
  const sealed = (): number => store.status().segments.active + store.status().segments.inactive
  const start = sealed()
  let n = 0
  for (; sealed() === start; n++) await store.write((from + (n % 200)) * store.blockBytes, tagBlock(`${tag}${n}`, store.blockBytes))
  return n
}

/** A directory under the temp folder, removed when the test ends. */
export function scratchDir (t: Test, prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** Writes `blocks` random blocks at a random block of the volume and, once acknowledged, into `model` (the image it must read as). */
export async function writeRandom (store: Store, model: Buffer, rng: Rng, blocks: number): Promise<void> {
  const B = store.blockBytes
  const data = rng.bytes(blocks * B)
  const offset = rng.int(model.length / B - blocks + 1) * B
  await store.write(offset, data)
  data.copy(model, offset)
}

/**
 * A pool of the given volumes at `<dir>/vol-<v>`, every segment mirrored on all of them (the
 * mirror tests' home; no capacity accounting).
 */
function mirrorHome (dir: string, volumes: string[]): SegmentHome {
  return {
    dirOf: v => path.join(dir, `vol-${v}`),
    volumes: () => volumes,
    place: async () => [...volumes],
    occupied () {},
    vacated () {},
    stillSuits: vs => vs.length === volumes.length
  }
}

/**
 * A new store in `dir` on a fresh simulated disk whose every segment is mirrored on two
 * volumes (`vol-v1`, `vol-v2`), and how to open it (no timed checkpoints); `openOn`: through
 * another layer over that disk.
 */
export async function mirroredStore (dir: string, geometry: { sizeBytes: number, blockBytes: number, segmentBytes: number }): Promise<{ sim: SimFileLayer, open: () => Promise<Store>, openOn: (layer: FileLayer) => Promise<Store> }> {
  const sim = new SimFileLayer()
  const home = mirrorHome(dir, ['v1', 'v2'])
  await Store.create(dir, geometry, sim)
  const openOn = (layer: FileLayer): Promise<Store> => Store.open(dir, { fileLayer: layer, home, checkpointIntervalMs: 0 })
  return { sim, open: () => openOn(sim), openOn }
}
