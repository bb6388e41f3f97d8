import path from 'node:path'
import t, { type Test } from 'tap'
import { PENDING_HEADERS_FILE } from '../src/store/pending-headers'
import { Store, type OpenOptions } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { SimArchive } from '../src/testing/sim-archive'
import { SimFileLayer } from '../src/testing/sim-file-layer'
import { SimIndexStorage } from '../src/testing/sim-index'
import { SimScheduler } from '../src/testing/sim-scheduler'
import { PassThroughLayer, fillSegment, scratchDir, tagBlock } from './helpers/sim-layer'

/**
 * With backing storage, compaction archives a segment whole before it writes free headers
 * into it (life-cycle.ts ensureArchived), and the segment's `archived` record is put in the
 * index, synced, before anything relies on it. When that synced put failed (an index write
 * refused: EIO, or no room), the in-memory table already said `archived`, and the next pass of
 * the same open took the table's word: it put no record and wrote its free headers. Only the
 * index batch's unsynced commit carried the flag; a power loss right after the pass published
 * its pending-headers file lost it, the next open redid the free headers from the file, and
 * the index then kept versions in freed entries of a segment it did not know was archived
 * (verify: "history: 419 version(s) the index keeps ... were freed from
 * seg-000000000004.log, whose whole copy backing storage does not hold", simulation seed
 * 7660033 PAGES=1 REBUILDS=1 RESIZE=1 of helper-95's first resize draft). The next pass
 * archived that local copy, free headers and all, over the whole one, and a full rebuild,
 * which reads an archived segment from backing storage's copy, lost those versions: restore
 * --at an earlier point read other bytes. ensureArchived now puts the record again, synced,
 * until one put of it succeeded.
 */
const B = 4096
const SEG = 258 * B // the smallest segment size, in whole pages
const SIZE = 1024 * B

const tmp = (t: Test): string => scratchDir(t, 'logdisk-archive-record-failed')
const blk = (tag: string): Buffer => tagBlock(tag, B)

/** Backing storage that tells the test when a put landed. */
class HookArchive extends SimArchive {
  afterPut: ((id: number) => void) | undefined
  async put (id: number, data: Buffer): Promise<void> {
    await super.put(id, data)
    this.afterPut?.(id)
  }
}

/** Tells the test once a pass's pending-headers file is published (renamed, directory synced). */
class PendingLayer extends PassThroughLayer {
  onPublished: (() => void) | undefined
  private renamed = false
  async rename (from: string, to: string): Promise<void> {
    await this.sim.rename(from, to)
    if (path.basename(to) === PENDING_HEADERS_FILE) this.renamed = true
  }

  async syncDir (dir: string): Promise<void> {
    await this.sim.syncDir(dir)
    if (this.renamed) {
      this.renamed = false
      this.onPublished?.()
    }
  }
}

t.test('a pass after one whose archived record failed puts the record durably before it frees', async t => {
  const sched = new SimScheduler(new Rng(1))
  const sim = new SimFileLayer(sched)
  const layer = new PendingLayer(sim)
  const indexes = new SimIndexStorage(sched)
  const archive = new HookArchive(sched)
  const dir = tmp(t)
  const drive = async <T>(p: Promise<T>): Promise<T> => { await sched.run(p); return p }
  await drive(Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG }, sim))
  const opts: OpenOptions = { fileLayer: layer, openIndex: indexes.open, archive, clock: sched.clock, checkpointIntervalMs: 0, historyKeepMs: 0 }
  let s = await drive(Store.open(dir, opts))

  for (let b = 0; b < 4; b++) await drive(s.write(b * B, blk(`A${b}`))) // dead at every pass: only P reads them
  await drive(s.syncPoint('P'))
  for (let b = 0; b < 4; b++) await drive(s.write(b * B, blk(`B${b}`)))
  await drive(fillSegment(s, 100, 'f')) // segment 0 sealed
  await drive(s.close()) // all of it in the index, durably
  s = await drive(Store.open(dir, opts))

  // Pass 1: segment 0 goes to backing storage whole, then the synced put of its record fails.
  archive.afterPut = id => { if (id === 0) sched.setFaults([{ match: /^index\.commit/, code: 'EIO', chance: 1 }]) }
  await t.rejects(drive(s.compact({ cleanBelow: 0 })), /EIO/, 'pass 1 fails at the index write of the archived record')
  archive.afterPut = undefined
  sched.setFaults([])
  t.ok(archive.objects.has(0), 'backing storage holds segment 0')

  // Pass 2, same open: the power fails once its free headers are on record (the file), before
  // the index takes that record.
  layer.onPublished = () => sched.losePower()
  const pass2 = s.compact({ cleanBelow: 0 })
  const { powerLost } = await sched.run(pass2)
  await pass2.catch(() => undefined)
  t.ok(powerLost, 'the power failed during pass 2')
  layer.onPublished = undefined
  await drive(s.abandon())
  sim.crash(new Rng(2))
  indexes.crash({ int: () => 0 } as unknown as Rng) // LevelDB keeps its synced batches alone
  sched.restorePower()

  s = await drive(Store.open(dir, opts))
  const report = await drive(s.verify())
  t.same(report.problems, [], 'verify finds nothing wrong')
  // The next pass frees and punches what the redone headers freed, after backing storage.
  await drive(s.compact({ cleanBelow: 0 }))
  t.same((await drive(s.verify())).problems, [], 'verify after the next pass finds nothing wrong')
  t.equal(archive.overwrites, 0, 'backing storage\'s copy of segment 0 was never replaced by another')
  const readP = async (what: string): Promise<void> => {
    const at = Buffer.alloc(SIZE)
    await drive((async () => {
      for await (const { block, data } of s.imageAt((await s.resolvePoint('P')).seq)) data.copy(at, block * B)
    })())
    for (let b = 0; b < 4; b++) t.ok(at.subarray(b * B, (b + 1) * B).equals(blk(`A${b}`)), `${what}: restore --at P: block ${b} reads A${b}`)
    for (let b = 0; b < 4; b++) t.ok((await drive(s.read(b * B, B))).equals(blk(`B${b}`)), `${what}: block ${b} reads B${b}`)
  }
  await readP('after the next pass')
  // The index is a cache of the log and of backing storage's copies: a rebuild finds P's versions.
  await drive(s.close())
  indexes.destroy(path.join(dir, 'index'))
  s = await drive(Store.open(dir, opts))
  await readP('after a full rebuild')
  t.same((await drive(s.verify())).problems, [], 'verify after the rebuild finds nothing wrong')
  await drive(s.close())
})
