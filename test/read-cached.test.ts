import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { nodeFileLayer } from '../src/store/file-layer'
import { dropCachedPages, readCached } from '../src/store/page-cache'
import { sealedStore } from './helpers/sealed-store'
import { scratchDir } from './helpers/sim-layer'

/**
 * Reads at a queue depth above 1 ask the page cache first, on the event loop
 * (native/page-cache.c readCached: preadv2 RWF_NOWAIT), and go through the thread pool only
 * for what it does not hold (native-notes/page-cache.md has the measurements). Checked here:
 * the addon reads exactly the cached bytes and answers EAGAIN for pages that are not cached;
 * the file layer turns that into "0 bytes"; and a store read with others in flight returns
 * the bytes written, whether its blocks are cached (served at once, counted) or were dropped
 * from the cache (read through the pool).
 */
const MiB = 1024 * 1024
const EAGAIN = 11

/**
 * Reads 4 KiB pages of `fd` at once (`read` answers readCached's way: bytes or -EAGAIN), each
 * right after the file's pages were dropped, until one is not in the cache. Not the first one
 * always: a NOWAIT read of a page not cached starts the kernel's read of it (mm/filemap.c
 * filemap_get_pages: readahead, then EAGAIN while the page is locked), and on a fast disk that
 * read can finish before the kernel looks again, so the page is served (seen once on CI). Every
 * page served must hold the file's bytes. Returns the first page missed and the pages served
 * with wrong bytes.
 */
async function readsAfterDrop (fd: number, data: Buffer, read: (at: number) => number, buf: Buffer): Promise<{ at?: number, tries: number, wrong: number[] }> {
  const wrong: number[] = []
  let tries = 0
  for (let at = 64 * 1024; at < data.length; at += 4096) {
    await dropCachedPages(fd)
    tries++
    const got = read(at)
    if (got === -EAGAIN) return { at, tries, wrong }
    if (got !== 4096 || !buf.subarray(0, 4096).equals(data.subarray(at, at + 4096))) wrong.push(at)
  }
  return { tries, wrong }
}

t.test('readCached reads what the page cache holds and answers EAGAIN for what it does not', { skip: readCached === undefined && 'no page-cache addon' }, async t => {
  const dir = scratchDir(t, 'logdisk-readcached')
  const file = path.join(dir, 'f')
  const data = crypto.randomBytes(256 * 1024)
  fs.writeFileSync(file, data)
  const fd = fs.openSync(file, 'r')
  t.teardown(() => fs.closeSync(fd))
  fs.fdatasyncSync(fd)
  fs.readSync(fd, Buffer.alloc(data.length), 0, data.length, 0) // in the cache now
  const buf = Buffer.alloc(64 * 1024)
  t.equal(readCached!(fd, buf, 0, buf.length, 128 * 1024), buf.length, 'a cached range is read whole')
  t.ok(buf.equals(data.subarray(128 * 1024, 192 * 1024)), 'with the file\'s bytes')
  const into = Buffer.alloc(8192, 7)
  t.equal(readCached!(fd, into, 4096, 4096, 0), 4096, 'into an offset of the buffer')
  t.ok(into.subarray(0, 4096).equals(Buffer.alloc(4096, 7)) && into.subarray(4096).equals(data.subarray(0, 4096)), 'only that part of it written')
  t.equal(await dropCachedPages(fd), 0, 'the file\'s pages dropped')
  const missed = await readsAfterDrop(fd, data, at => readCached!(fd, buf, 0, 4096, at), buf)
  t.same(missed.wrong, [], 'a page read at once after the drop holds the file\'s bytes')
  t.ok(missed.at !== undefined, `a page not cached: EAGAIN, nothing waited for (${missed.tries} page(s) tried)`)
  t.equal(readCached!(fd, buf, 0, 4096, 10 * MiB), 0, 'past the end of the file: 0')
  t.throws(() => readCached!(fd, buf, 60 * 1024, 8192, 0), /within the buffer/, 'a range outside the buffer is refused')
  const handle = await nodeFileLayer.open(file, false)
  t.teardown(() => handle.close())
  const layerMissed = await readsAfterDrop(fd, data, at => { const n = handle.readCached!(buf, 0, 4096, at); return n === 0 ? -EAGAIN : n }, buf)
  t.same(layerMissed.wrong, [], 'the file layer: a page read at once holds the file\'s bytes')
  t.ok(layerMissed.at !== undefined, 'the file layer: 0 bytes for a page not cached')
  await handle.read(buf, 0, 4096, layerMissed.at!)
  t.equal(handle.readCached!(buf, 0, 4096, layerMissed.at!), 4096, 'and the page once read')
})

t.test('store reads beside others: cached blocks served at once, dropped ones through the pool, every byte as written', { skip: readCached === undefined && 'no page-cache addon' }, async t => {
  const { store, data } = await sealedStore(t, 'logdisk-readcached-store')
  // 4 KiB reads, 16 at a time, in a random order over everything written, twice: the first
  // round finds most blocks out of the cache, the second finds them in it.
  const order = Array.from({ length: data.length / 4096 }, (_, i) => i).sort(() => Math.random() - 0.5)
  for (const round of [1, 2]) {
    const before = store.inlineIo.cachedReads
    let wrong = -1
    for (let i = 0; i < order.length; i += 16) {
      const batch = order.slice(i, i + 16)
      const got = await Promise.all(batch.map(b => store.read(b * 4096, 4096)))
      batch.forEach((b, j) => { if (wrong < 0 && !got[j].equals(data.subarray(b * 4096, (b + 1) * 4096))) wrong = b })
    }
    t.equal(wrong, -1, `round ${round}: every block reads as written`)
    const served = store.inlineIo.cachedReads - before
    if (round === 2) t.ok(served > order.length / 2, `round 2: ${served} of ${order.length} reads served at once from the page cache`)
    else t.comment(`round 1: ${served} of ${order.length} served at once`)
  }
})

t.test('a large read alone (IoOptions.inline) takes what the page cache holds at once, the rest through the pool', { skip: readCached === undefined && 'no page-cache addon' }, async t => {
  const { store, data } = await sealedStore(t, 'logdisk-readcached-large')
  for (const round of [1, 2]) {
    const before = store.inlineIo.cachedReads
    let wrong = -1
    for (let at = 0; at < data.length; at += MiB) {
      const got = await store.read(at, MiB, undefined, { inline: true })
      if (wrong < 0 && !got.equals(data.subarray(at, at + MiB))) wrong = at / MiB
    }
    t.equal(wrong, -1, `round ${round}: every MiB reads as written`)
    const served = store.inlineIo.cachedReads - before
    if (round === 2) t.ok(served >= 14, `round 2: ${served} runs served at once from the page cache (14 MiB in runs of at most 1 MiB)`)
    else t.comment(`round 1: ${served} runs served at once`)
  }
})
