import { execFileSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { nodeFileLayer } from '../src/store/file-layer'
import { canWarmCachedPages } from '../src/store/page-cache'
import { SegmentWarmer, WARM_AFTER_MISSES, WARM_AGAIN_AFTER_MS } from '../src/store/segment-warmer'
import { sealedStore, resident } from './helpers/sealed-store'
import { scratchDir } from './helpers/sim-layer'

/**
 * A segment whose small image reads keep missing the page cache is read whole into it
 * (posix_fadvise WILLNEED, native/page-cache.c warmCache; src/store/segment-warmer.ts;
 * native-notes/page-cache.md has the measurements). Checked here: when the warmer says yes
 * and when it holds back (too few misses, a warm just asked, memory that is not free); that a
 * real store's cold random reads bring their segment into the cache whole and leave the
 * segments nobody read alone, with the bytes read unchanged; that a closed handle warms
 * nothing; and that LOGDISK_WARM_SEGMENTS=0 turns it off.
 */
const MiB = 1024 * 1024

async function until (ok: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms
  while (!ok() && Date.now() < end) await new Promise(resolve => setTimeout(resolve, 20))
}

t.test('the warmer: after enough misses, not twice in a row, only into free memory', async t => {
  let now = 1_000_000
  let free = 100 * 64 * MiB
  const reserve = 10 * 64 * MiB
  const w = new SegmentWarmer(64 * MiB, () => now, () => free, reserve)
  const miss = (id: number, n: number): boolean[] => Array.from({ length: n }, () => w.missed(id))
  t.same(miss(7, WARM_AFTER_MISSES - 1).filter(Boolean), [], 'not before enough misses')
  t.equal(w.missed(7), true, `the ${WARM_AFTER_MISSES}th miss warms it`)
  t.same(miss(7, 3 * WARM_AFTER_MISSES).filter(Boolean), [], 'not again at once: its pages are on their way')
  now += WARM_AGAIN_AFTER_MS
  t.equal(miss(7, WARM_AFTER_MISSES).at(-1), true, 'again once misses come back later (its pages were evicted)')
  t.equal(w.warmed, 2)

  // Free memory: 100 segments' worth, 10 kept free, and the warms of the last moments count
  // as taken (their pages may not be in yet).
  now += WARM_AGAIN_AFTER_MS
  let yes = 0
  for (let id = 0; id < 100; id++) if (miss(id, WARM_AFTER_MISSES).at(-1)) yes++
  t.equal(yes, 90, 'warms stop where they would eat into the reserve')
  now += WARM_AGAIN_AFTER_MS
  free = 40 * 64 * MiB // the pages of those warms landed
  for (let id = 200; id < 300; id++) if (miss(id, WARM_AFTER_MISSES).at(-1)) yes++
  t.equal(yes, 120, 'later, as much as is still free above the reserve')
  now += WARM_AGAIN_AFTER_MS
  free = reserve // memory full of cache: no warm evicts anything
  t.equal(miss(400, WARM_AFTER_MISSES).at(-1), false, 'none when memory is full')
  t.equal(w.warmed, 122)
})

t.test('the warmer forgets misses spread over a huge store rather than grow', async t => {
  const w = new SegmentWarmer(64 * MiB, () => 0, () => 1e15)
  for (let id = 0; id < 5000; id++) w.missed(id)
  t.ok((w as unknown as { misses: Map<number, number> }).misses.size <= 4096, 'at most 4096 segments counted')
})

t.test('cold random reads of one segment bring it into the page cache whole; the others stay out', { skip: !canWarmCachedPages && 'no page-cache addon' }, async t => {
  // No reserve: on a machine whose memory is full of cache the default one would refuse.
  const { store, data, sealed } = await sealedStore(t, 'logdisk-warm', { warmReserveBytes: 0 })
  t.ok(sealed.length >= 3, `${sealed.length} sealed segments`)
  // Synced sealed segments leave the page cache (page-cache.test.ts): the reads start cold.
  await until(() => sealed.every(f => resident(f) === 0), 5000)
  t.same(sealed.map(resident), sealed.map(() => 0), 'the sealed segments start out of the cache')

  // Random 4 KiB reads, 16 at a time, of the first 3 MiB of the image: all in the first segment.
  const blocks = 3 * MiB / 4096
  let reads = 0
  const reader = async (): Promise<void> => {
    while (store.warmedSegments === 0 && reads < 4096) {
      const at = crypto.randomInt(blocks) * 4096
      reads++
      const got = await store.read(at, 4096)
      if (!got.equals(data.subarray(at, at + 4096))) throw new Error(`block at ${at} read back wrong`)
    }
  }
  await Promise.all(Array.from({ length: 16 }, reader))
  t.equal(store.warmedSegments, 1, `one segment warmed after ${reads} reads`)
  const first = sealed[0]
  const size = fs.statSync(first).size
  await until(() => resident(first) >= 0.95 * size, 5000)
  t.ok(resident(first) >= 0.95 * size, `${path.basename(first)} is in the cache: ${resident(first)} of ${size} bytes`)
  for (const f of sealed.slice(2)) t.equal(resident(f), 0, `${path.basename(f)}, never read, stays out`)
  const back = await store.read(0, data.length)
  t.ok(back.equals(data), 'the 14 MiB read back are the ones written')
})

t.test('a closed handle warms nothing: not the file that got its descriptor number', { skip: !canWarmCachedPages && 'no page-cache addon' }, async t => {
  const dir = scratchDir(t, 'logdisk-warm-closed')
  const first = await nodeFileLayer.open(path.join(dir, 'first'), true)
  await first.close()
  const other = path.join(dir, 'other')
  const second = await nodeFileLayer.open(other, true) // the lowest free descriptor: the one just closed
  t.teardown(() => second.close().catch(() => undefined))
  await second.writev([crypto.randomBytes(MiB)], 0)
  await second.datasync()
  await second.dropCache!()
  t.equal(resident(other), 0, 'the other file is out of the cache')
  await first.warmCache!()
  await new Promise(resolve => setTimeout(resolve, 200))
  t.equal(resident(other), 0, 'advice through the closed handle read nothing in')
  await second.warmCache!()
  await until(() => resident(other) === MiB, 5000)
  t.equal(resident(other), MiB, 'its own handle reads it in')
})

t.test('LOGDISK_WARM_SEGMENTS=0 turns it off', async t => {
  const mod = path.join(__dirname, '..', 'src', 'store', 'page-cache.js')
  const say = (env: NodeJS.ProcessEnv): string => execFileSync(process.execPath, ['-e', `process.stdout.write(String(require(${JSON.stringify(mod)}).canWarmCachedPages))`], { env: { ...process.env, ...env } }).toString()
  t.equal(say({ LOGDISK_WARM_SEGMENTS: '0' }), 'false', 'turned off')
  t.equal(say({ LOGDISK_WARM_SEGMENTS: '' }), String(canWarmCachedPages), 'on otherwise, where the addon is built')
})
