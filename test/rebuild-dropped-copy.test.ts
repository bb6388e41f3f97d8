import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import type { FileHandle } from '../src/store/file-layer'
import { segmentFileName } from '../src/store/format'
import type { SegmentHome } from '../src/store/segment-home'
import { Store } from '../src/store/store'
import { SimFileLayer } from '../src/testing/sim-file-layer'
import { archiveLink } from '../src/archive/link'
import { parseTarget } from '../src/archive/parse-target'
import { PassThroughLayer, failingHandle, scratchDir, tagBlock } from './helpers/sim-layer'

/**
 * A mirror copy dropped at run time (a write to it failed), then the index lost before any
 * open read the record that says so (docs/FORMAT.md, open points): the full rebuild from the
 * log has no record and judges the copies by their bytes alone. Every flushed block must read
 * its acknowledged bytes afterwards and `verify` must be clean.
 *
 * - A write of the log's tail fails on one copy: that copy stops short of the other, and the
 *   rebuild takes the copy whose log reaches furthest (recovery.ts byLogEnd). Kept as a
 *   regression test of that.
 * - A compaction's free header fails on one copy of a sealed segment: both copies then end at
 *   the same entry, one with the entries freed and one without, and the rebuild could not tell
 *   them apart: it made the good copy match the first listed (the stale one), bringing back a
 *   write whose discard (a trim in a later segment) compaction had freed with it. The block
 *   read its old bytes instead of zeros.
 */
const B = 4096
const SIZE = 1024 * B
const SEG = 258 * B

/** Fails the next writev to v1's copy of segment `failSegment` (EIO), once; with `failRemove`, every remove on v1. */
class FailV1Layer extends PassThroughLayer {
  failSegment: number | undefined
  failRemove = false
  async remove (file: string): Promise<void> {
    if (this.failRemove && file.includes(`${path.sep}vol-v1${path.sep}`)) throw Object.assign(new Error(`EIO: remove ${file} (test: a failing disk)`), { code: 'EIO' })
    return await this.sim.remove(file)
  }

  async open (file: string, create: boolean): Promise<FileHandle> {
    const h = await this.sim.open(file, create)
    if (!file.includes(`${path.sep}vol-v1${path.sep}`)) return h
    const name = path.basename(file)
    return failingHandle(h, 'writev', () => {
      if (this.failSegment === undefined || name !== segmentFileName(this.failSegment)) return false
      this.failSegment = undefined
      return true
    }, `EIO: write to ${file} (test: a failing disk)`)
  }
}

async function mirrored (t: Test, name: string, withArchive = false): Promise<{ dir: string, sim: SimFileLayer, layer: FailV1Layer, open: () => Promise<Store>, model: Buffer, put: (s: Store, block: number, tag: string) => Promise<void>, vacated: string[], target?: string }> {
  const vacated: string[] = []
  const dir = scratchDir(t, name)
  const sim = new SimFileLayer()
  const layer = new FailV1Layer(sim)
  const home: SegmentHome = {
    dirOf: v => path.join(dir, `vol-${v}`),
    volumes: () => ['v1', 'v2'], // v1, the copy that fails, is listed first
    place: async () => ['v1', 'v2'],
    occupied () {},
    vacated (id, vs) { for (const v of vs) vacated.push(`${id}@${v}`) },
    stillSuits: vs => vs.length === 2
  }
  const cfg = await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG }, sim)
  const target = withArchive ? scratchDir(t, `${name}-target`) : undefined
  const archive = target !== undefined ? archiveLink(parseTarget(target), cfg.uuid) : undefined
  const open = (): Promise<Store> => Store.open(dir, { fileLayer: layer, home, checkpointIntervalMs: 0, historyKeepMs: 0, archive })
  const model = Buffer.alloc(SIZE)
  const put = async (s: Store, block: number, tag: string): Promise<void> => {
    const data = tagBlock(tag, B)
    await s.write(block * B, data)
    data.copy(model, block * B)
  }
  return { dir, sim, layer, open, model, put, vacated, target }
}

/** kill -9, the index lost, a full rebuild from the log; then every block and verify. */
async function rebuildAndCheck (t: Test, dir: string, s: Store, open: () => Promise<Store>, model: Buffer): Promise<Store> {
  await s.abandon()
  fs.rmSync(path.join(dir, 'index'), { recursive: true, force: true })
  fs.mkdirSync(path.join(dir, 'index'))
  const again = await open()
  t.teardown(() => again.close().catch(() => undefined))
  t.ok(again.recovery.rebuiltIndex, 'the index was rebuilt from the log')
  const image = await again.read(0, SIZE)
  const bad: string[] = []
  for (let b = 0; b < SIZE / B; b++) {
    const got = image.subarray(b * B, (b + 1) * B)
    if (!got.equals(model.subarray(b * B, (b + 1) * B))) bad.push(`${b}: ${JSON.stringify(got.subarray(0, 8).toString('latin1'))}`)
  }
  t.same(bad, [], 'every flushed block reads its acknowledged bytes')
  const report = await again.verify()
  t.ok(report.ok, `verify clean (${report.problems.join('; ')})`)
  return again
}

t.test('a write to one copy fails, more writes are flushed, the index is lost: the rebuild keeps the up-to-date copy', async t => {
  const { dir, sim, layer, open, model, put } = await mirrored(t, 'rebuild-dropped-write')
  const s = await open()
  for (let b = 0; b < 10; b++) await put(s, b, `A${b}`)
  await s.flush()
  layer.failSegment = 0
  for (let b = 0; b < 10; b++) await put(s, b, `B${b}`) // the first one fails on v1: dropped
  t.equal(layer.failSegment, undefined, 'a write to v1 failed')
  t.same(s.volumesOf(0), ['v2'], 'the record names v2 alone')
  for (let b = 10; b < 40; b++) await put(s, b, `C${b}`)
  await s.flush()
  await s.verify() // queued after whatever the drop left to do under the maintenance lock
  t.notOk(sim.readFile(path.join(dir, 'vol-v1', segmentFileName(0))), 'the dropped copy was removed once its drop was on record')
  await rebuildAndCheck(t, dir, s, open, model)
})

/**
 * A snapshot whose marker is in segment 0, deleted (its deletion marker in segment 2); the
 * compaction that frees both markers fails its free header on v1's copy of segment 0 (v1
 * dropped). `removeFails`: the volume refuses the removal of the stale copy too.
 */
async function freeHeaderDropped (t: Test, name: string, removeFails: boolean, withArchive = false): Promise<void> {
  const { dir, sim, layer, open, model, put, vacated, target } = await mirrored(t, name, withArchive)
  const stale = path.join(dir, 'vol-v1', segmentFileName(0))
  const s = await open()
  for (let b = 0; b < 20; b++) await put(s, b, `A${b}`)
  await s.snapshot({ name: 'gone' }) // its marker is in segment 0
  for (let b = 20; b < 600; b++) await put(s, b, `B${b}`) // on to segment 2
  await s.deleteSnapshot('gone') // its deletion marker is in segment 2
  await s.snapshot({ name: 'next' }) // the newest with the highest volume id (that marker stays)
  for (let b = 600; b < 900; b++) await put(s, b, `C${b}`) // segment 2 sealed
  await s.flush()
  t.same(s.volumesOf(0), ['v1', 'v2'], 'segment 0 is on v1 and v2')
  layer.failSegment = 0
  layer.failRemove = removeFails
  await s.compact({})
  t.equal(layer.failSegment, undefined, 'a free header failed on v1')
  let markers = 0
  for await (const e of s.entries()) if ((e.kind === 3 || e.kind === 4) && e.freed === true) markers++
  if (target === undefined) t.equal(markers, 2, 'the snapshot marker and its deletion marker were freed')
  else {
    // Backing storage keeps segment 0 whole (the pass archived it first), its snapshot marker
    // with it: the deletion marker stays beside it (marker-life.ts).
    t.equal(markers, 1, 'the snapshot marker was freed (locally), its deletion marker stays')
    t.ok(fs.readdirSync(target, { recursive: true }).length > 0, 'backing storage holds what the pass archived')
  }
  t.same(s.volumesOf(0), ['v2'], 'the record names v2 alone for segment 0')
  await s.flush()
  await s.verify() // queued after whatever the drop left to do under the maintenance lock
  if (removeFails) {
    t.ok(sim.readFile(stale), 'the stale copy stays where its removal failed')
    t.notOk(vacated.includes('0@v1'), 'and still counts on v1')
  } else {
    t.notOk(sim.readFile(stale), 'the stale copy was removed once its drop was on record')
    t.ok(vacated.includes('0@v1'), 'and no longer counts on v1')
  }
  t.same(s.snapshots().map(x => x.name), ['next'], 'one snapshot before the rebuild')
  layer.failRemove = false
  const again = await rebuildAndCheck(t, dir, s, open, model)
  t.same(again.snapshots().map(x => x.name), ['next'], 'the deleted snapshot stays deleted after the rebuild')
  t.same(again.volumesOf(0), ['v2'], 'the rebuilt index names v2 alone for segment 0')
}

t.test('a free header fails on one copy of a sealed segment, the index is lost: the stale copy is gone, the rebuild takes the good one', async t => {
  await freeHeaderDropped(t, 'rebuild-dropped-free', false)
})

t.test('the same, the stale copy\'s removal failing too: the rebuild takes the copy holding the free headers', async t => {
  await freeHeaderDropped(t, 'rebuild-dropped-free-kept', true)
})

t.test('the same with backing storage (segment 0 archived before the pass frees in it, local copies kept): the rebuild keeps the local copy holding the free headers', async t => {
  await freeHeaderDropped(t, 'rebuild-dropped-free-archived', true, true)
})
