// Blocks trimmed by one entry may be held in different segments (format.ts trimHolder): a trim
// move takes only those still needed when it runs, and the rows of the others stay behind,
// naming the old entry's segment (with backing storage for good, since no version leaves the
// index; or after a crash before the pass deleted them). Compaction counted where needed trims
// are held by runs of consecutive blocks at one seq and took a run's first holder for all of
// it, so a holder reached only inside another's run went uncounted and its trim move entry
// was freed while the index still named it (simulation seed 7420062: verify found the blocks
// indexed but not in the log). Once the old entry went too, the log held no trim of those
// blocks, and an index rebuilt from it read the data they had hidden.
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { analyzeVersions, type Judgement } from '../src/store/compaction'
import { EntryKind, TRIMMED } from '../src/store/format'
import { Store } from '../src/store/store'
import { dieAfterTrimMove } from './helpers/die-after-trim-move'
import { rebuiltFromLog } from './helpers/rebuilt-from-log'

t.setTimeout(120_000)

const B = 4096
const BLOCKS = 256 // a 1 MiB image
const SEGMENT = 258 * B

t.test('a run of trims at one seq held in two segments counts both segments', async t => {
  // Blocks 23..27 trimmed at seq 35; 25..27 moved to segment 1's trim move (holder 2), 23 and
  // 24 still name segment 0 (holder 1); every one needed (nothing may die here).
  const rows = [[23, 35, TRIMMED, 1], [24, 35, TRIMMED, 1], [25, 35, TRIMMED, 2], [26, 35, TRIMMED, 2], [27, 35, TRIMMED, 2], [28, 35, TRIMMED, 1]]
  async function * history (): AsyncGenerator<number[]> { yield rows.flat() }
  const j: Judgement = { cuts: [], range: { from: 1, to: 100 }, fenceSeq: 100, windowStart: 100 }
  const got = await analyzeVersions(history(), j)
  t.same([...got.trimHolders.keys()].sort((a, b) => a - b), [0, 1], 'segments 0 and 1 hold needed trims')
  t.equal(got.trimHolders.get(0), 2, 'segment 0: two runs (23-24 and 28)')
  t.equal(got.trimHolders.get(1), 1, 'segment 1: one run (25-27)')
})

t.test('a trim move entry whose trims share a seq with trims held elsewhere stays while they are needed', async t => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-trim-split-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  await Store.create(dir, { sizeBytes: BLOCKS * B, blockBytes: B, segmentBytes: SEGMENT })
  const open = (): Promise<Store> => Store.open(dir, { checkpointIntervalMs: 0, historyKeepMs: 0 })
  const model = Buffer.alloc(BLOCKS * B)
  const segmentOf = (position: number): number => Math.floor(position / SEGMENT)
  /** Rewrites blocks 200..255 until the log's head is in segment `id` (what it rewrites dies). */
  const fillTo = async (s: Store, id: number): Promise<void> => {
    for (let i = 0; i < 20 && segmentOf(s.status().index.position) < id; i++) {
      const data = crypto.randomBytes(56 * B)
      await s.write(200 * B, data)
      data.copy(model, 200 * B)
    }
    t.equal(segmentOf(s.status().index.position), id, `the log's head is in segment ${id}`)
  }
  let s = await open()
  // A snapshot of the empty image: compacting its partition later judges nothing after it.
  await s.snapshot({ name: 'empty' })
  // Segment 0 is mostly live data, never cleaned: it keeps the bytes of blocks 2..6 after
  // they are discarded (its write entry holds other blocks still needed).
  const first = crypto.randomBytes(200 * B)
  await s.write(0, first)
  first.copy(model)
  await fillTo(s, 1)
  // Segment 1: one trim entry for blocks 2..6, then 2 and 3 written again (their trims die).
  await s.discard(2 * B, 5 * B)
  model.fill(0, 2 * B, 7 * B)
  const again = crypto.randomBytes(2 * B)
  await s.write(2 * B, again)
  again.copy(model, 2 * B)
  await fillTo(s, 2)

  // A pass moves the needed trims (4..6) out of segment 1 and dies before it deletes the dead
  // ones (2 and 3): their rows still name segment 1, those of 4..6 the trim move's segment.
  const moved = dieAfterTrimMove(s)
  await t.rejects(s.compact({ cleanBelow: 0.5 }), /killed after the trim move/)
  t.equal(moved(), 1, 'the pass moved trims and died')
  await s.close().catch(() => {})
  s = await open()
  let trimMoveSegment = -1
  for await (const e of s.entries()) if (e.kind === EntryKind.trimMove) trimMoveSegment = segmentOf(e.position)
  t.equal(trimMoveSegment, 2, 'the trim move entry is in segment 2')
  await fillTo(s, 3)

  // The snapshot's partition (nothing after it dies: every trim above is judged needed), then
  // a whole pass that frees without cleaning (the dead trims of 2 and 3 go, and with them the
  // trim entry of segment 1; segment 0 stays whole). A pass that cleaned would move the trims
  // of 4..6 out of segment 2 again, which hid the loss. The defect: the snapshot's pass
  // counted segment 1 for the run 2..6 and freed segment 2's trim move entry.
  await s.compact({ snapshot: 'empty' })
  await s.compact({ cleanBelow: 0 })
  let trimMoves = 0
  for await (const e of s.entries()) if (e.kind === EntryKind.trimMove && e.freed !== true) trimMoves++
  t.equal(trimMoves, 1, 'the trim move entry is still in the log')
  // The index rebuilt from the log alone: the trims of 4..6 are still there to hide segment 0's bytes.
  s = await rebuiltFromLog(t, s, dir, open, model)
  t.ok((await s.read(4 * B, 3 * B)).equals(Buffer.alloc(3 * B)), 'rebuilt: the discarded blocks 4..6 read zeros, not their old data')
  await s.close()
})
