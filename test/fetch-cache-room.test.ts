// The fetch-back cache (<store>/cache: archived segments brought back for reads) on a
// filesystem with little room (helper-85, 2026-12-07): its copies were not counted against the
// free space of the store's filesystem and were evicted only after a fetch succeeded, so once
// they filled it every read of archived data failed (ENOSPC to the reader, errno 28) and so did
// the index's checkpoints, for good. Now the cache keeps the filesystem above its headroom,
// evicts before a fetch when room is short, a fetch that fails for room leaves no partial file
// and retries once after evicting, and a read that still cannot be served fails with IO (EIO).
//
// No real small filesystem: a file layer over the real one simulates it for <store>/cache
// (room() answers from a made-up size, writes past it fail with ENOSPC, as a full tmpfs does).
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { fromSystemError, isLogdiskError } from '../src/errors'
import { toErrno } from '../src/fuse/errno'
import type { ArchiveLink } from '../src/store/archive-link'
import { nodeFileLayer, type FileHandle, type FileLayer } from '../src/store/file-layer'
import { headroomOf } from '../src/store/headroom'
import { Store } from '../src/store'
import { assertWritable } from '../src/cli/store-access'

const MiB = 1024 * 1024
const B = 4096
const SEG = 2 * MiB
const SIZE = 32 * MiB
const DATA = 12 * MiB

function scratch (t: Test, name: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `logdisk-${name}-`))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** Bytes in the files of `dir` (the cache), partial ones too. */
function bytesIn (dir: string): number {
  let n = 0
  for (const f of fs.existsSync(dir) ? fs.readdirSync(dir) : []) n += fs.statSync(path.join(dir, f)).size
  return n
}

/** An archive target in memory. */
function memoryLink (): ArchiveLink {
  const objects = new Map<number, Buffer>()
  return {
    async put (id, data) { objects.set(id, Buffer.from(data)) },
    async get (id) { return Buffer.from(objects.get(id)!) },
    async list () { return [...objects.keys()] },
    describe: () => 'memory'
  }
}

/**
 * The real file layer, with <store>/cache on a simulated filesystem of `totalBytes` of which
 * `others()` are taken by other files: writes there past what is left fail with ENOSPC (the
 * part that fits written first), and room() (when `answersRoom`) says what is left. As on a
 * real filesystem, a file deleted while a handle is open on it keeps its blocks until the
 * last one closes (or it is truncated).
 */
function smallCacheLayer (cacheDir: string, totalBytes: number, others: () => number, answersRoom: boolean): FileLayer {
  interface Node { handles: number, unlinked: boolean, size: number }
  const nodes = new Map<string, Node>()
  const held = new Set<Node>() // deleted, still open
  const heldBytes = (): number => [...held].reduce((n, x) => n + x.size, 0)
  const free = (): number => Math.max(0, totalBytes - others() - bytesIn(cacheDir) - heldBytes())
  const inCache = (file: string): boolean => path.dirname(path.resolve(file)) === cacheDir
  const guarded = (h: FileHandle, file: string, node: Node): FileHandle => new Proxy(h, {
    get (target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver)
      if (prop === 'close') {
        return async (): Promise<void> => {
          await target.close()
          if (--node.handles === 0) held.delete(node)
        }
      }
      if (prop === 'truncate') {
        return async (length: number): Promise<void> => {
          await target.truncate(length)
          if (node.unlinked) node.size = Math.min(node.size, length)
        }
      }
      if (prop !== 'writev') return typeof v === 'function' ? v.bind(target) : v
      return async (buffers: Buffer[], position: number): Promise<void> => {
        const data = Buffer.concat(buffers)
        const grows = Math.max(0, position + data.length - fs.statSync(file).size)
        const room = free()
        if (grows <= room) return await target.writev(buffers, position)
        const fits = data.length - (grows - room)
        if (fits > 0) await target.writev([data.subarray(0, fits)], position)
        throw fromSystemError(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }), `write ${file}`)
      }
    }
  })
  const nodeOf = (file: string): Node => {
    let node = nodes.get(file)
    if (!node) nodes.set(file, node = { handles: 0, unlinked: false, size: 0 })
    return node
  }
  return {
    ...nodeFileLayer,
    async open (file, create) {
      const h = await nodeFileLayer.open(file, create)
      if (!inCache(file)) return h
      const node = nodeOf(path.resolve(file))
      node.handles++
      return guarded(h, path.resolve(file), node)
    },
    async remove (file) {
      const node = nodes.get(path.resolve(file))
      if (node && inCache(file)) {
        nodes.delete(path.resolve(file))
        node.unlinked = true
        try { node.size = fs.statSync(file).size } catch { node.size = 0 }
        if (node.handles > 0) held.add(node)
      }
      await nodeFileLayer.remove(file)
    },
    async rename (from, to) {
      await nodeFileLayer.rename(from, to)
      const node = nodes.get(path.resolve(from))
      nodes.delete(path.resolve(from))
      if (node) nodes.set(path.resolve(to), node)
    },
    room: answersRoom ? async dir => path.resolve(dir) === cacheDir ? { freeBytes: free(), totalBytes } : await nodeFileLayer.room!(dir) : undefined
  }
}

async function archivedStore (t: Test, name: string): Promise<{ dir: string, cacheDir: string, link: ArchiveLink, data: Buffer }> {
  const dir = scratch(t, name)
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG })
  const link = memoryLink()
  const data = crypto.randomBytes(DATA)
  const s = await Store.open(dir, { checkpointIntervalMs: 0, archive: link })
  try {
    await s.write(0, data)
    await s.flush()
    await s.archive({ workingSet: 1 })
    t.ok(s.status().segments.archived >= 5, `archived: ${s.status().segments.archived} segments`)
  } finally {
    await s.close()
  }
  return { dir, cacheDir: path.join(dir, 'cache'), link, data }
}

t.test('the cache keeps the store\'s filesystem above its headroom, evicting before it fetches', async t => {
  const { dir, cacheDir, link, data } = await archivedStore(t, 'cache-room')
  const total = 40 * MiB
  // The index is on the store's filesystem: its reserve (24 MiB) is kept too (helper-97 D3).
  const reserve = headroomOf(total, true)
  const others = 8 * MiB // the index, logs, another program's files: 32 MiB left, 8 for the cache
  const s = await Store.open(dir, { checkpointIntervalMs: 0, archive: link, fileLayer: smallCacheLayer(cacheDir, total, () => others, true) })
  t.teardown(() => s.close())
  let most = 0
  for (let at = 0; at < DATA; at += 256 * 1024) {
    const got = await s.read(at, 256 * 1024)
    if (!got.equals(data.subarray(at, at + 256 * 1024))) { t.fail(`bytes at ${at} differ`); return }
    most = Math.max(most, bytesIn(cacheDir))
  }
  t.pass('every archived byte read back')
  t.ok(most > 0 && most <= total - others - reserve, `the cache held at most ${most} bytes`)
  t.same(fs.readdirSync(cacheDir).filter(f => f.endsWith('.fetch')), [], 'no partial file')
})

t.test('a fetch that fails for room leaves no partial file, evicts and is tried once more', async t => {
  const { dir, cacheDir, link, data } = await archivedStore(t, 'cache-enospc')
  // room() cannot be asked: the write finds out (3 MiB: a copy and a half fit).
  const s = await Store.open(dir, { checkpointIntervalMs: 0, archive: link, fileLayer: smallCacheLayer(cacheDir, 3 * MiB, () => 0, false) })
  t.teardown(() => s.close())
  for (let at = 0; at < DATA; at += MiB) {
    const got = await s.read(at, MiB)
    if (!got.equals(data.subarray(at, at + MiB))) { t.fail(`bytes at ${at} differ`); return }
    if (fs.readdirSync(cacheDir).some(f => f.endsWith('.fetch'))) { t.fail(`a partial file after the read at ${at}`); return }
  }
  t.pass('every archived byte read back, no partial file left')
})

t.test('a read whose fetched copy cannot be written fails with IO (EIO), not ENOSPC, and writes nothing', async t => {
  for (const answersRoom of [true, false]) {
    const { dir, cacheDir, link } = await archivedStore(t, 'cache-none')
    // A full filesystem: not even one copy fits.
    const s = await Store.open(dir, { checkpointIntervalMs: 0, archive: link, fileLayer: smallCacheLayer(cacheDir, 16 * MiB, () => 15 * MiB, answersRoom) })
    const err = await s.read(0, B).then(() => undefined, (e: unknown) => e)
    t.ok(isLogdiskError(err, 'IO'), `room ${answersRoom ? 'asked' : 'not asked'}: ${String((err as Error)?.message)}`)
    t.equal(toErrno(err), -5, 'the reader gets EIO')
    t.equal(bytesIn(cacheDir), 0, 'no partial file stays')
    await s.close()
  }
})

t.test('after a kill, a command that writes removes the cache left behind when it is what leaves too little room', async t => {
  const dir = scratch(t, 'cache-kill')
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG })
  const cache = path.join(dir, 'cache')
  fs.mkdirSync(cache)
  fs.writeFileSync(path.join(cache, 'seg-000000000001.log'), Buffer.alloc(2 * MiB))
  fs.writeFileSync(path.join(cache, 'seg-000000000002.log.fetch'), Buffer.alloc(MiB))
  // A filesystem with 5 MiB left besides the cache: 2 MiB free with it, under the 4 MiB a
  // command that writes needs; its daemon was killed (daemon.json names a pid that is gone).
  fs.writeFileSync(path.join(dir, 'daemon.json'), JSON.stringify({ pid: 2 ** 22 + 12345, store: dir, mountpoint: path.join(dir, 'm') }))
  const statfs = (): { bavail: number, bsize: number } => ({ bavail: (5 * MiB - bytesIn(cache)) / 4096, bsize: 4096 })
  t.doesNotThrow(() => assertWritable(dir, statfs), 'not refused: the cache made the difference')
  t.equal(bytesIn(cache), 0, 'the cache is gone')
  // A cache that a live process holding the store may be reading is kept; the refusal says so.
  fs.writeFileSync(path.join(cache, 'seg-000000000003.log'), Buffer.alloc(2 * MiB))
  fs.writeFileSync(path.join(dir, 'holder.json'), JSON.stringify({ pid: process.ppid, holder: 'logdisk compact' }))
  t.throws(() => assertWritable(dir, statfs), new RegExp(`holds 2\\.0 MiB of archived segments fetched back by the running process ${process.ppid}`), 'kept while a live process holds the store, and the refusal says so')
  t.equal(bytesIn(cache), 2 * MiB, 'the cache is kept')
  fs.rmSync(path.join(dir, 'holder.json'))
  // With no cache to remove, the refusal stands.
  const full = (): { bavail: number, bsize: number } => ({ bavail: 256, bsize: 4096 })
  t.throws(() => assertWritable(dir, full), /no space left on the filesystem/, 'refused when the cache is not the reason')
})
