import path from 'node:path'
import { BLOCK_CRC_BYTES, ENTRY_HEADER_BYTES, EntryKind, HELD_BY_OWN_TRIM, SEGMENT_HEADER_BYTES, TRIMMED, segmentFileName, trimHolder } from './format'
import type { BlockMap } from './block-map'
import type { FileHandle, FileLayer } from './file-layer'
import type { Checkpoint, IndexDb } from './index-db'
import { intactCopies, intactEnd, scanCopy, scanSegment } from './scanner'
import { crc32c } from './crc'
import { lowerBound } from './compaction'
import { entryBytes, moveRecordAt, tableBytes, trimRunAt } from './entry'
import { Segment, type SegmentGeometry } from './segment'
import { MirroredHandle } from './mirrored-handle'
import type { SegmentHome } from './segment-home'

export interface VerifyReport {
  ok: boolean
  segments: number
  entries: number
  blocksChecked: number
  /** Problems found, one line each (the first 100). */
  problems: string[]
  problemCount: number
}

export interface VerifyInput {
  layer: FileLayer
  home: SegmentHome
  /** Where each segment's copies should be. */
  segmentVolumes: Map<number, string[]>
  /** Opens a fresh handle on a segment (archived ones are fetched back). */
  open: (id: number) => Promise<Segment>
  geometry: SegmentGeometry
  segmentIds: number[]
  /** Copies each local segment should have (mirror); fewer is reported as degraded. */
  copies?: number
  /** Entries up to this checkpoint are compared with the index; later ones only CRC-checked. */
  upTo: Checkpoint
  /** Log position where the log ends for this check (appends after it are ignored). */
  end: number
  map: BlockMap
  index: IndexDb
  /** The baseline's blocks, and a reader of one block of it. */
  baseline?: { blocks: Array<{ block: number, seq: number, crc: number }>, read: (block: number) => Promise<Buffer>, base: number }
  /** Progress in bytes of the log read (a segment at a time) out of all segments. */
  onProgress?: (doneBytes: number, totalBytes: number) => void
  /**
   * Segments archived to backing storage (`is`), and whether backing storage still holds a
   * segment's whole copy (`held`; undefined: it cannot be asked). Versions compaction freed
   * from an archived segment's local file are read from that copy; a segment whose copy is
   * gone reads on only from a cached copy, until the cache goes.
   */
  archived?: { is: (id: number) => boolean, held: (id: number) => Promise<boolean | undefined> }
  /**
   * The points the store calls restorable: every one after `horizon` (points at or before it
   * may have lost versions to compaction), and every snapshot's cut (`cuts`, ascending). A
   * version no such point reads may be freed without its index row being gone yet.
   */
  promised?: { horizon: number, cuts: number[] }
}

const MAX_PROBLEMS = 100

/**
 * Reads the whole log: every header and block CRC, the sequence numbers, and that the newest
 * version of every block found in the log is what both the in-memory map and the LevelDB
 * index say (the index is a cache of the log and must agree with it). Every older version the
 * index keeps (the history the store calls restorable) must still have its bytes: not in a
 * run compaction freed, unless the segment is archived whole, and not in a segment the log
 * no longer has. A store recovered from a replica that had shipped punched segments restored
 * other bytes at such points while verify said ok (a hostile test, helper-52).
 */
export async function verifyStore (input: VerifyInput): Promise<VerifyReport> {
  const { geometry, upTo } = input
  const report: VerifyReport = { ok: true, segments: 0, entries: 0, blocksChecked: 0, problems: [], problemCount: 0 }
  const problem = (text: string): void => {
    report.ok = false
    report.problemCount++
    if (report.problems.length < MAX_PROBLEMS) report.problems.push(text)
  }
  const newest = new Map<number, number>() // block -> position, from the log, up to the checkpoint
  const newestSeq = new Map<number, number>()
  // Of a block whose newest version is a trim: the index's holder for it, as the log says
  // (format.ts trimHolder: the segment of the last entry listing it; 0 for an older release's
  // row, which only its own trim entry may hold). A wrong one would let compaction free the
  // entry that holds the trim, and a rebuild would bring back the data the trim hides.
  const trimHeldBy = new Map<number, { holder: number, ownEntry: boolean }>()
  // A version both in the baseline and still in the log (the merge's index commit did not land
  // before a crash, or compaction has not freed the log copy yet): either copy is right.
  const alsoAt = new Map<number, number>()
  /** Blocks [first, first+count) trimmed at `seq` by an entry of the log, `held` as it says. */
  const trimmed = (first: number, count: number, seq: number, held: { holder: number, ownEntry: boolean }): void => {
    for (let block = first; block < first + count; block++) {
      if ((newestSeq.get(block) ?? -1) > seq) continue
      newest.set(block, TRIMMED)
      newestSeq.set(block, seq)
      alsoAt.delete(block)
      trimHeldBy.set(block, held)
    }
  }
  for (const b of input.baseline?.blocks ?? []) {
    report.blocksChecked++
    const data = await input.baseline!.read(b.block)
    if (crc32c(data) !== b.crc) problem(`baseline: block ${b.block} fails its checksum`)
    newest.set(b.block, input.baseline!.base + b.block * geometry.blockBytes)
    newestSeq.set(b.block, b.seq)
  }
  let lastSeq = 0
  let lastId = -1
  /**
   * Segments that could not be opened (an archive out of reach): reported once each above, and
   * left out of the index comparison below, which would otherwise report every block they hold
   * as indexed but not in the log (thousands of lines about an index that is right).
   */
  const unread = new Set<number>()
  const inUnread = (position: number | undefined): boolean => position !== undefined && unread.has(Math.floor(position / geometry.segmentBytes))
  const holds = new Map<number, Promise<boolean | undefined>>() // asked once per segment
  const archiveHolds = (id: number): Promise<boolean | undefined> => {
    let answer = holds.get(id)
    if (!answer) holds.set(id, answer = input.archived?.held(id).catch(() => undefined) ?? Promise.resolve(undefined))
    return answer
  }
  /** The runs compaction freed in each segment read (log positions [starts[i], ends[i])), in order. */
  const freed = new Map<number, { starts: number[], ends: number[] }>()
  const freedAt = (position: number): boolean => {
    const runs = freed.get(Math.floor(position / geometry.segmentBytes))
    if (!runs) return false
    const i = lowerBound(runs.ends, position + 1) // the first run ending after position
    return i < runs.ends.length && runs.starts[i] <= position
  }
  const totalBytes = input.segmentIds.length * geometry.segmentBytes
  let segmentsDone = 0
  input.onProgress?.(0, totalBytes)
  for (const id of input.segmentIds) {
    if (segmentsDone > 0) input.onProgress?.(segmentsDone * geometry.segmentBytes, totalBytes)
    segmentsDone++
    if (id !== lastId + 1) lastSeq = 0 // recycled segments leave gaps in the log
    lastId = id
    const volumes = input.segmentVolumes.get(id) ?? []
    let segment: Segment
    try {
      segment = await input.open(id)
    } catch (err) {
      problem(`segment ${segmentFileName(id)}: ${(err as Error).message}`)
      lastSeq = 0 // the next segment's sequence cannot be checked against an unread one
      unread.add(id)
      continue
    }
    // A copy served from the cache (or a local one compaction punched) while backing storage
    // lost the segment: verify said ok until the cache went, and then the history was gone (a
    // hostile test, helper-57).
    if (input.archived?.is(id) === true && (await archiveHolds(id)) === false) {
      problem(`segment ${segmentFileName(id)}: archived, but backing storage no longer holds it; what reads now comes from a local or cached copy, and reads that need backing storage fail`)
    }
    for (const v of volumes) {
      if (!segment.volumes.includes(v)) problem(`segment ${segmentFileName(id)}: the copy on pool volume ${v} (${input.home.dirOf(v)}) is lost; run logdisk pool repair`)
    }
    const distinct = new Set(volumes).size
    if (distinct < volumes.length) {
      problem(`segment ${segmentFileName(id)}: the index names a pool volume twice (${volumes.join(', ')}): one copy counted as two; run logdisk pool repair`)
    }
    if (distinct > 0 && distinct < (input.copies ?? 1)) {
      problem(`segment ${segmentFileName(id)}: degraded, ${distinct} of ${input.copies} copies (written before mirror was raised, or a copy fell behind after a failed write or was lost); run logdisk pool repair`)
    }
    report.segments++
    const limit = Math.floor(input.end / geometry.segmentBytes) === id ? input.end % geometry.segmentBytes : undefined
    // Mirrored: the scan reads the copy a reader would be served from (of a sealed segment,
    // the first that passes its checksums and is not cut short; reads go around the others),
    // so that one damaged copy is named as such rather than as thousands of blocks missing
    // from the log; its problems name its volume as the others' do.
    const copies = segment.handle instanceof MirroredHandle ? segment.handle.copies : []
    // Each copy is read once to choose the one served and to find its own problems; then the
    // served one again for its entries (each copy was read twice: a review of 2026-12-06).
    const checked = copies.length > 1 && limit === undefined ? await Promise.all(copies.map(c => checkCopy(c, geometry.blockBytes))) : undefined
    const main = checked === undefined ? 0 : intactCopies(checked.map((_, i) => i), checked.map(c => c.end))[0] ?? 0
    const firstName = copies.length > 0 ? copyName(copies[main]) : path.basename(segment.file)
    try {
      for await (const item of scanSegment(copies.length > 0 ? copies[main].handle : segment.handle, SEGMENT_HEADER_BYTES, geometry.blockBytes, true, limit)) {
        if (item.type === 'end') {
          if (item.torn) problem(`${firstName} offset ${item.offset}: ${item.torn}`)
          break
        }
        const h = item.header
        const position = id * geometry.segmentBytes + item.offset
        report.entries++
        if (lastSeq !== 0 && h.seq !== lastSeq + 1) problem(`${firstName} offset ${item.offset}: sequence ${h.seq} follows ${lastSeq}`)
        lastSeq = h.kind === EntryKind.free ? h.block : h.seq
        if (h.kind === EntryKind.free) {
          const runs = freed.get(id) ?? { starts: [], ends: [] }
          runs.starts.push(position)
          runs.ends.push(position + entryBytes(h))
          freed.set(id, runs)
        }
        if (h.kind === EntryKind.trim && position < upTo.position) trimmed(h.block, h.count, h.seq, { holder: trimHolder(id), ownEntry: true })
        if (h.kind === EntryKind.trimMove && position < upTo.position) {
          const held = { holder: trimHolder(id), ownEntry: false }
          for (let r = 0; r < h.count; r++) {
            const run = trimRunAt(item.table, r)
            trimmed(run.block, run.count, run.seq, held)
          }
        }
        if (h.kind !== EntryKind.write && h.kind !== EntryKind.move) continue
        report.blocksChecked += h.count
        const blockOf = (i: number): number => blockIn(h, item.table, i)
        for (const i of item.badBlocks) problem(`${firstName} offset ${item.offset}: block ${blockOf(i)} fails its checksum`)
        if (position >= upTo.position) continue
        const dataStart = position + tableBytes(h)
        for (let i = 0; i < h.count; i++) {
          // The newest version has the highest seq; a moved version (same seq) replaces its original.
          const block = blockOf(i)
          const seq = h.kind === EntryKind.write ? h.seq : moveRecordAt(item.table, i).seq
          const known = newestSeq.get(block) ?? -1
          // Higher seq wins; on a tie a moved copy wins over its original, and the baseline's
          // copy over a log copy compaction has not freed yet.
          if (known > seq) continue
          if (known === seq && (newest.get(block) ?? 0) >= (input.baseline?.base ?? Infinity)) {
            alsoAt.set(block, dataStart + i * geometry.blockBytes)
            continue
          }
          newest.set(block, dataStart + i * geometry.blockBytes)
          newestSeq.set(block, seq)
          alsoAt.delete(block)
        }
      }
      // Every other copy must hold sound entries too (a reader falls back to it when the
      // first is lost or fails a checksum).
      for (let c = 0; c < copies.length; c++) {
        if (c === main) continue
        for (const line of (checked?.[c] ?? await checkCopy(copies[c], geometry.blockBytes, limit)).problems) problem(line)
      }
    } finally {
      await segment.close()
    }
  }
  // The index must agree with the log for everything the checkpoint covers.
  const indexed = new Map<number, number>()
  const indexedHolder = new Map<number, number>()
  const scanned = new Set(input.segmentIds)
  /** Per segment: versions the index keeps whose bytes are gone (one problem each segment, not each block). */
  const lostHistory = new Map<number, { why: 'gone' | 'freed', versions: number, firstSeq: number, firstBlock: number }>()
  const freedElsewhere = async (id: number): Promise<boolean> => input.archived?.is(id) === true && (await archiveHolds(id)) !== false
  /**
   * Whether a version written at `seq` and superseded at `next` (Infinity: the newest) is one a
   * restorable point reads: a point after the horizon, or a snapshot's cut (never given up).
   */
  const cuts = input.promised?.cuts ?? []
  const promised = (seq: number, next: number): boolean => {
    if (!input.promised || next > input.promised.horizon + 1) return true
    const i = lowerBound(cuts, seq) // the first cut at or after seq
    return i < cuts.length && cuts[i] < next
  }
  const judge = async (block: number, seq: number, position: number, next: number): Promise<void> => {
    if (position < 0 || position >= upTo.position || position >= (input.baseline?.base ?? Infinity) || inUnread(position)) return
    const id = Math.floor(position / geometry.segmentBytes)
    const gone = !scanned.has(id) ? 'gone' : freedAt(position) && !(await freedElsewhere(id)) ? 'freed' : undefined
    if (gone === undefined || !promised(seq, next)) return
    const lost = lostHistory.get(id) ?? { why: gone, versions: 0, firstSeq: seq, firstBlock: block }
    lost.versions++
    if (seq < lost.firstSeq) { lost.firstSeq = seq; lost.firstBlock = block }
    lostHistory.set(id, lost)
  }
  // Versions come in (block, seq) order: a version is judged once the next one of its block
  // (its successor) or another block's is seen.
  let held: { block: number, seq: number, position: number } | undefined
  for await (const [block, seq, position, crc] of input.index.history()) {
    if (position < upTo.position || position >= (input.baseline?.base ?? Infinity)) indexed.set(block, position)
    if (position === TRIMMED) indexedHolder.set(block, crc)
    if (held) await judge(held.block, held.seq, held.position, held.block === block ? seq : Infinity)
    held = { block, seq, position }
  }
  if (held) await judge(held.block, held.seq, held.position, Infinity)
  for (const [id, lost] of lostHistory) {
    const where = lost.why === 'gone' ? `are in ${segmentFileName(id)}, which the log no longer has` : `were freed from ${segmentFileName(id)}, whose whole copy backing storage does not hold`
    problem(`history: ${lost.versions} version(s) the index keeps (the oldest: block ${lost.firstBlock} at sequence ${lost.firstSeq}) ${where}: restores of the points they belong to fail or read other bytes`)
  }
  for (const [block, held] of trimHeldBy) {
    if (newest.get(block) !== TRIMMED || indexed.get(block) !== TRIMMED) continue // told below
    const named = indexedHolder.get(block)
    if (named !== held.holder && !(named === HELD_BY_OWN_TRIM && held.ownEntry)) problem(`index: block ${block}'s trim is held in segment ${segmentFileName(held.holder - 1)}, LevelDB names ${named === HELD_BY_OWN_TRIM ? 'its trim entry' : `segment ${segmentFileName((named ?? 1) - 1)}`}`)
  }
  for (const [block, position] of newest) {
    const ok = (at: number | undefined): boolean => at === position || (at !== undefined && at === alsoAt.get(block))
    if (!ok(indexed.get(block)) && !inUnread(indexed.get(block))) problem(`index: block ${block} should be at log position ${position}, LevelDB says ${indexed.get(block) ?? 'nothing'}`)
    const inMemory = input.map.position(block)
    if ((inMemory < upTo.position || inMemory >= (input.baseline?.base ?? Infinity)) && !ok(inMemory) && !inUnread(inMemory)) problem(`index: block ${block} should be at log position ${position}, the in-memory map says ${inMemory}`)
  }
  for (const [block, position] of indexed) {
    if (!newest.has(block) && !inUnread(position)) problem(`index: block ${block} is indexed but not in the log`)
  }
  input.onProgress?.(totalBytes, totalBytes)
  return report
}

/**
 * One copy of a mirrored segment, read once (scanner.ts scanCopy): its problem lines, and its
 * checkedEnd (undefined: damaged), which chooses the copy a reader is served from (intactCopies).
 */
async function checkCopy (copy: { handle: FileHandle, file: string, volume: string }, blockBytes: number, limit?: number): Promise<{ end: number | undefined, problems: string[] }> {
  const name = copyName(copy)
  const scan = await scanCopy(copy.handle, blockBytes, limit)
  const problems = scan.bad.map(b => `${name} offset ${b.offset}: block ${blockIn(b.header, b.table, b.slot)} fails its checksum`)
  if (scan.torn) problems.push(`${name} offset ${scan.end}: ${scan.torn.reason}`)
  if (scan.error !== undefined) problems.push(`${name}: ${scan.error}`)
  return { end: intactEnd(scan), problems }
}

/** How verify names one copy of a mirrored segment in its problem lines. */
function copyName (copy: { file: string, volume: string }): string {
  // The whole path: a volume's id alone did not say which directory to look at (helper-61).
  return `${copy.file} (copy on pool volume ${copy.volume})`
}

/** The block that entry slot `i` holds: a write's run from `block`, a move's table row. */
function blockIn (h: { kind: EntryKind, block: number }, table: Buffer, i: number): number {
  return h.kind === EntryKind.write ? h.block + i : moveRecordAt(table, i).block
}
