import { execFileSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { nodeFileLayer, type FileHandle, type FileLayer } from '../src/store/file-layer'
import { canDropCachedPages, PAGE_CACHE_ADDON } from '../src/store/page-cache'
import { passMemoryReclaimer, startHeapTrim } from '../src/daemon/heap-trim'
import { WritebackGuard } from '../src/store/writeback-guard'
import { SimFileLayer } from '../src/testing/sim-file-layer'
import { sealedStore, resident } from './helpers/sealed-store'
import { scratchDir } from './helpers/sim-layer'

/**
 * A sealed segment's pages leave the page cache once it is fdatasync'd (native/page-cache.c,
 * src/store/page-cache.ts; native-notes/page-cache.md says why: fresh pages cost a host
 * fault on this VM, and sequential writes went from ~250 to ~1,100 MB/s once pages were
 * reused). What is checked here: the addon is built by `make build` and loads; the kernel
 * really drops the sealed segments' pages (fincore) and not the current one's; the bytes read
 * back the same from disk; a closed handle advises nothing (its descriptor's number may name
 * another file by then); LOGDISK_KEEP_PAGE_CACHE=1 turns it off; and a file whose write-back
 * failed keeps its pages (they hold the only copy of the lost writes).
 */
const MiB = 1024 * 1024

t.test('make build builds the page-cache addon and it loads here', { skip: process.platform !== 'linux' && 'Linux only' }, async t => {
  t.ok(fs.existsSync(PAGE_CACHE_ADDON), `${PAGE_CACHE_ADDON} exists (scripts/build-native.mjs)`)
  t.equal(canDropCachedPages, true, 'the store drops pages through it')
})

t.test('sealed segments leave the page cache once synced; the current one stays; reads are unchanged', { skip: !canDropCachedPages && 'no page-cache addon' }, async t => {
  const { store, data, files, sealed } = await sealedStore(t, 'logdisk-pagecache')
  t.ok(sealed.length >= 3, `${sealed.length} sealed segments`)
  // The drop is not awaited by the flush: it is done within moments.
  const until = Date.now() + 5000
  while (sealed.some(f => resident(f) > 0) && Date.now() < until) await new Promise(resolve => setTimeout(resolve, 20))
  for (const f of sealed) t.equal(resident(f), 0, `${path.basename(f)}: no page left in the cache`)
  t.ok(resident(files.at(-1)!) > 0, 'the current segment keeps its pages (it is being written)')
  const back = await store.read(0, data.length)
  t.equal(crypto.createHash('sha256').update(back).digest('hex'), crypto.createHash('sha256').update(data).digest('hex'), 'the 14 MiB read back from disk are the ones written')
})

t.test('a closed handle drops nothing: not the pages of the file that got its descriptor number', { skip: !canDropCachedPages && 'no page-cache addon' }, async t => {
  const dir = scratchDir(t, 'logdisk-pagecache-closed')
  const first = await nodeFileLayer.open(path.join(dir, 'first'), true)
  await first.close()
  // Node hands out the lowest free descriptor: the next open takes the one just closed.
  const other = path.join(dir, 'other')
  const second = await nodeFileLayer.open(other, true)
  t.teardown(() => second.close().catch(() => undefined))
  await second.writev([crypto.randomBytes(MiB)], 0)
  await second.datasync() // clean pages: what a drop would take
  t.ok(resident(other) > 0, 'the other file is in the page cache')
  await first.dropCache!()
  t.equal(resident(other), MiB, 'advice through the closed handle left the other file\'s pages alone')
  await second.dropCache!()
  t.equal(resident(other), 0, 'its own handle drops them')
})

t.test('LOGDISK_KEEP_PAGE_CACHE=1 keeps the pages', async t => {
  const mod = path.join(__dirname, '..', 'src', 'store', 'page-cache.js')
  const say = (env: NodeJS.ProcessEnv): string => execFileSync(process.execPath, ['-e', `process.stdout.write(String(require(${JSON.stringify(mod)}).canDropCachedPages))`], { env: { ...process.env, ...env } }).toString()
  t.equal(say({ LOGDISK_KEEP_PAGE_CACHE: '1' }), 'false', 'turned off')
  t.equal(say({ LOGDISK_KEEP_PAGE_CACHE: '' }), String(canDropCachedPages), 'on otherwise, where the addon is built')
})

t.test('a file whose write-back failed keeps its pages', async t => {
  const sim = new SimFileLayer()
  const dropped: string[] = []
  // The simulated disk, with a dropCache that records what it was asked to drop.
  const layer: FileLayer = {
    ...sim,
    list: d => sim.list(d),
    remove: f => sim.remove(f),
    rename: (a, b) => sim.rename(a, b),
    mkdirp: d => sim.mkdirp(d),
    syncDir: d => sim.syncDir(d),
    punchHole: (f, o, l) => sim.punchHole(f, o, l),
    open: async (file, create): Promise<FileHandle> => {
      const h = await sim.open(file, create)
      return Object.assign(Object.create(h) as FileHandle, { dropCache: async () => { dropped.push(file) } })
    }
  }
  const guard = new WritebackGuard(layer)
  await guard.layer.mkdirp('/d')
  const good = await guard.layer.open('/d/good', true)
  const bad = await guard.layer.open('/d/bad', true)
  for (const h of [good, bad]) await h.writev([Buffer.alloc(4096, 1)], 0)
  await good.datasync()
  sim.failNext('datasync', 'EIO')
  await t.rejects(bad.datasync(), /EIO|I\/O/, 'the write-back of one file fails')
  await good.dropCache!()
  await bad.dropCache!()
  t.same(dropped, ['/d/good'], 'only the file whose write-back did not fail is dropped')
})

t.test('trimHeap gives freed heap memory back to the system (the daemon calls it every 2 s)', { skip: !canDropCachedPages && 'no addon' }, async t => {
  // 150 MB of small native allocations, a few kept among them so that glibc cannot give the
  // rest back by itself, then freed: resident until malloc_trim.
  const mod = path.join(__dirname, '..', 'src', 'store', 'page-cache.js')
  const script = `
    const { trimHeap } = require(${JSON.stringify(mod)})
    const rss = () => process.memoryUsage().rss / 1048576
    const keep = []
    let junk = []
    for (let i = 0; i < 150000; i++) { junk.push(new Uint8Array(1000)); if (i % 64 === 0) keep.push(new Uint8Array(16)) }
    junk = null
    global.gc(); global.gc()
    const before = rss()
    trimHeap().then(released => process.stdout.write(JSON.stringify({ before, after: rss(), released, kept: keep.length })))`
  const got = JSON.parse(execFileSync(process.execPath, ['--expose-gc', '-e', script], { timeout: 60_000 }).toString()) as { before: number, after: number, released: boolean }
  t.equal(got.released, true, 'malloc_trim gave memory back')
  t.ok(got.before - got.after > 80, `resident ${Math.round(got.before)} -> ${Math.round(got.after)} MiB`)
  t.equal(typeof startHeapTrim({ LOGDISK_HEAP_TRIM_MS: '0' }), 'function', 'LOGDISK_HEAP_TRIM_MS=0: no timer, a stop function all the same')
  startHeapTrim({ LOGDISK_HEAP_TRIM_MS: '50' })() // started and stopped
})

t.test('the daemon collects garbage between the steps of a pass once the heap grew by LOGDISK_PASS_GC_MIB', async t => {
  t.equal(passMemoryReclaimer({ LOGDISK_PASS_GC_MIB: '0' }), undefined, 'LOGDISK_PASS_GC_MIB=0: off')
  // In a child: a collection runs (a dropped object's WeakRef is cleared) once 40 MiB were
  // allocated since the last, and not for 4 MiB more (under 16). WeakRefs clear only after the
  // job that made them, hence the turns of the event loop.
  const mod = path.join(__dirname, '..', 'src', 'daemon', 'heap-trim.js')
  const script = `
    const { passMemoryReclaimer } = require(${JSON.stringify(mod)})
    const reclaim = passMemoryReclaimer({})
    const turn = () => new Promise(resolve => setImmediate(resolve))
    const dropped = mib => { const junk = []; for (let i = 0; i < mib; i++) junk.push(Buffer.alloc(1048576, 1)); return new WeakRef(junk) }
    ;(async () => {
      const big = dropped(40)
      await turn()
      reclaim()
      await turn()
      const small = dropped(4)
      await turn()
      reclaim()
      await turn()
      process.stdout.write(JSON.stringify({ bigCollected: big.deref() === undefined, smallCollected: small.deref() === undefined }))
    })()`
  const got = JSON.parse(execFileSync(process.execPath, ['-e', script], { timeout: 60_000 }).toString()) as { bigCollected: boolean, smallCollected: boolean }
  t.equal(got.bigCollected, true, '40 MiB allocated since the last: collected')
  t.equal(got.smallCollected, false, '4 MiB more: not worth a collection')
})
