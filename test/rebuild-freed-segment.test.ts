// A segment made only of free entries must be recycled after a full index rebuild too.
// Compaction found segments by their entry summaries, and a rebuild gives none to what free
// entries cover (the entries inside a run are not read). A pass that wrote its free headers
// and stopped before recycling the segments they emptied (a kill -9 or a power loss there;
// here a failed punch), followed by a rebuild (the index lost with the power), left segments
// that no later pass saw: on disk, and counted by the pool, for good (a FORMAT.md open point).
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { LogdiskError } from '../src/errors'
import { nodeFileLayer, type FileLayer } from '../src/store/file-layer'
import { Store, type OpenOptions } from '../src/store/store'
import { scratchDir, tagBlock } from './helpers/sim-layer'

const B = 4096
const SEG = 258 * B // the smallest segment: about four 64-block entries (a write splits at its end)
const SIZE = 1024 * B
const ROUNDS = 16
const HOT = 64 // blocks 0..63 rewritten every round, one 64-block entry a round
const KEEPERS = 600 // blocks 600..631 written once, last: live

const roundData = (r: number): Buffer => Buffer.concat(Array.from({ length: HOT }, (_, i) => tagBlock(`r${r}-b${i}`, B)))

/** Segment files in the store (no pool: `<store>/segments/`). */
const segmentFiles = (dir: string): string[] => fs.readdirSync(path.join(dir, 'segments')).filter(n => /^seg-\d+\.log$/.test(n)).sort()

/**
 * A store whose sealed segments hold rounds of the hot blocks: snapshot a after round 3
 * (deleted later: its versions and its marker die), b after round 8 (kept: the newest with
 * the highest id, its versions live); then blocks written once and a tail of small writes
 * that seals their segment. Punches fail while `failPunch` says so.
 */
async function build (dir: string, failPunch: () => boolean): Promise<{ open: () => Promise<Store> }> {
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG })
  const punchFails = async (): Promise<void> => { if (failPunch()) throw new LogdiskError('IO', 'punch: injected failure') }
  const layer: FileLayer = {
    ...nodeFileLayer,
    punchHole: async (file, offset, length) => { await punchFails(); return await nodeFileLayer.punchHole(file, offset, length) },
    punchHoles: async (file, ranges) => { await punchFails(); for (const [o, l] of ranges) await nodeFileLayer.punchHole(file, o, l) }
  }
  const opts: Partial<OpenOptions> = { fileLayer: layer, checkpointIntervalMs: 0, historyKeepMs: 0 }
  const s = await Store.open(dir, opts)
  try {
    for (let r = 0; r < ROUNDS; r++) {
      await s.write(0, roundData(r))
      if (r === 3) await s.snapshot({ name: 'a' })
      if (r === 8) await s.snapshot({ name: 'b' })
    }
    await s.deleteSnapshot('a')
    for (let i = 0; i < 32; i++) await s.write((KEEPERS + i) * B, tagBlock(`keeper-${i}`, B))
    for (let i = 0; i < 300; i++) await s.write((700 + (i % 8)) * B, tagBlock(`tail-${i}`, B))
    await s.flush()
  } finally {
    await s.close()
  }
  return { open: () => Store.open(dir, opts) }
}

t.test('segments of free entries alone are recycled after an index rebuild', async t => {
  /** What every read must give: the current image's blocks and snapshot b's, every checksum. */
  const check = async (store: Store, what: string): Promise<void> => {
    const hot = await store.read(0, HOT * B)
    t.ok(hot.equals(roundData(ROUNDS - 1)), `${what}: the hot blocks read their last round`)
    const snap = await store.readSnapshot('b', 0, HOT * B)
    t.ok(snap.equals(roundData(8)), `${what}: snapshot b reads round 8`)
    let keepersOk = true
    for (let i = 0; i < 32; i++) if (!(await store.read((KEEPERS + i) * B, B)).equals(tagBlock(`keeper-${i}`, B))) keepersOk = false
    t.ok(keepersOk, `${what}: the blocks written once read them`)
    let tailOk = true
    for (let b = 0; b < 8; b++) if (!(await store.read((700 + b) * B, B)).equals(tagBlock(`tail-${296 + b < 300 ? 296 + b : 288 + b}`, B))) tailOk = false
    t.ok(tailOk, `${what}: the last small writes read back`)
    t.same(store.snapshots().map(x => x.name), ['b'], `${what}: snapshots`)
    const v = await store.verify()
    t.equal(v.ok, true, `${what}: verify is clean (every block's checksum)${v.ok ? '' : `: ${v.problems.join('; ')}`}`)
  }

  // The twin: what the pass recycles when nothing stops it.
  const twinDir = scratchDir(t, 'logdisk-rebuild-freed-twin')
  const twin = await (await build(twinDir, () => false)).open()
  const twinReport = await twin.compact({ cleanBelow: 0 })
  await twin.close()
  const twinFiles = segmentFiles(twinDir)
  t.ok(twinReport.segmentsRecycled >= 2, `the twin's pass recycled ${twinReport.segmentsRecycled} segments, ${twinFiles.length} files left`)

  // The other store's pass stops at its first punch: after its free headers and its index
  // commit, before it recycles anything (what a crash right there leaves, but for the index).
  const dir = scratchDir(t, 'logdisk-rebuild-freed-segment')
  let failPunch = true
  const stopped = await build(dir, () => failPunch)
  let s = await stopped.open()
  t.teardown(() => s.close().catch(() => undefined))
  const before = segmentFiles(dir)
  await t.rejects(s.compact({ cleanBelow: 0 }), { code: 'IO' }, 'the pass stops at its first punch, after its free headers')
  failPunch = false
  t.same(segmentFiles(dir), before, 'nothing was recycled')
  await s.close()

  // The index is lost: a full rebuild from the log.
  fs.rmSync(path.join(dir, 'index'), { recursive: true })
  s = await stopped.open()
  t.ok(s.recovery.rebuiltIndex, 'the index was rebuilt')
  await check(s, 'after the rebuild')

  const rep = await s.compact({ cleanBelow: 0 })
  const after = segmentFiles(dir)
  t.equal(rep.segmentsRecycled, twinReport.segmentsRecycled, `the next pass recycled ${rep.segmentsRecycled} segments (of free entries alone), as the twin's did`)
  t.same(after, twinFiles, `the segment files left are the twin's: ${before.length} -> ${after.length}`)
  t.same(s.logSegments().map(x => x.id), after.map(n => Number(n.slice(4, 16))), 'the store counts the files left')
  await check(s, 'after the pass')
  const again = await s.compact({ cleanBelow: 0 })
  t.equal(again.segmentsRecycled, 0, 'a second pass has nothing more to recycle')
  const segmentsBefore = s.logSegments().map(x => x.id)
  await s.close()

  // A second rebuild agrees with the index the pass left.
  fs.rmSync(path.join(dir, 'index'), { recursive: true })
  s = await stopped.open()
  t.ok(s.recovery.rebuiltIndex, 'rebuilt again')
  t.same(s.recovery.damaged, [], 'the rebuild found no damage (recycled ids are gaps)')
  t.equal(s.recovery.cut, undefined, 'and cut nothing')
  t.same(s.logSegments().map(x => x.id), segmentsBefore, 'the same segments')
  t.same(segmentFiles(dir), after, 'the same files')
  await check(s, 'after a second rebuild')
  const third = await s.compact({ cleanBelow: 0 })
  t.equal(third.segmentsRecycled, 0, 'and a pass after it recycles nothing more')
})
