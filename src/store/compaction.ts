import { LogdiskError } from '../errors'
import type { HistoryRows } from './index-db'
import type { TrimRun } from './entry'
import { HELD_BY_OWN_TRIM, MAX_TRIM_BLOCKS } from './format'
import { RecordList } from './record-list'

/**
 * Which versions of blocks are still needed (001 Fig. 6, in-place compaction). A version of
 * a block lives from its sequence number until the block's next version; it is needed when it
 * is the newest (the current volume reads it) or when a snapshot cut falls inside its life
 * (that snapshot reads it). Everything else is dead: superseded and pinned by no snapshot.
 *
 * One pass over the index of versions in (block, seq) order plays the role of the seed's
 * reverse scan with a block-encountered table: the next version of each block is the key that
 * follows it. Live versions are kept by log position (typed arrays, no object per version),
 * which is what decides whether an entry's bytes are still referenced: a version that
 * compaction moved elsewhere no longer holds its old entry.
 */
/** Index of the first element >= `value` in the sorted `values[0..count)`. */
export function lowerBound (values: ArrayLike<number>, value: number, count = values.length): number {
  let lo = 0
  let hi = count
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if (values[mid] < value) lo = mid + 1
    else hi = mid
  }
  return lo
}

/** Sorted log positions of every needed version's data: all compaction needs to decide what is free. */
export interface LiveVersions {
  positions: Float64Array
  count: number
}

/** Needed versions with what moving them takes, sorted by position (only those a filter chose). */
export interface LiveDetails extends LiveVersions {
  blocks: Float64Array
  seqs: Float64Array
  crcs: Uint32Array
}

export interface VersionAnalysis {
  live: LiveVersions
  /**
   * Trimmed versions still needed, by where they are held (they have no data to find by
   * position; their index rows name the segment of the entry that holds each, format.ts
   * trimHolder): the segments, each with about how many runs moving its trims would take.
   */
  trimHolders: Map<number, number>
  /** Seqs of needed trimmed versions whose rows name no holder (an older release's index): their own trim entry holds them. */
  legacyTrims: Set<number>
  /**
   * The dead versions (their index keys go): block and seq of each, in index order, in chunks
   * (no object per version, no array copied as it grows). Undefined when there were more than
   * the caller would hold (`keepDead`): deadVersionBatches finds them again, a batch at a time.
   */
  dead: RecordList | undefined
  deadCount: number
  /** The newest sequence at which a dead version was still the visible one. */
  horizon: number
}

/** What decides which versions are needed: the snapshot cuts, the range that may die, the fence and the history window. */
export interface Judgement {
  cuts: number[] // snapshot cut seqs, ascending
  range: { from: number, to: number } // only versions written in this range may be found dead
  /** The pass's fence (pass-fence.ts): versions after it are not seen at all. */
  fenceSeq: number
  /** Every point from this sequence on is protected (the history window, history.keep). */
  windowStart: number
}

/**
 * One pass over the index of versions in (block, seq) order (IndexDb.historyBatches: rows of
 * block, seq, position, crc): each version is needed (`live`) or dead (`dead`), the same way
 * every time for the same history and judgement.
 */
async function judgeVersions (
  history: AsyncIterable<HistoryRows>,
  j: Judgement,
  live: (position: number, block: number, seq: number, crc: number) => void,
  dead: (block: number, seq: number, successorSeq: number) => void,
  afterRows?: () => Promise<void> | undefined
): Promise<void> {
  const prev: Previous = { have: false, block: 0, seq: 0, position: 0, crc: 0 }
  for await (const rows of history) {
    judgeRows(rows, j, prev, live, dead)
    await afterRows?.()
  }
  if (prev.have) live(prev.position, prev.block, prev.seq, prev.crc)
}

/** The version before a batch's first (have false before the first of all). */
interface Previous { have: boolean, block: number, seq: number, position: number, crc: number }

/**
 * judgeVersions for one batch. Not in the async function itself: its locals live across the
 * awaits in a context object, where every double stored is a new heap number (judgeVersions
 * allocated 86 MiB in a compaction after a 2 GiB prefill and 2.5 GiB of sequential writes, 42
 * with this split, measured; the rest is the positions handed to `live`).
 */
function judgeRows (
  rows: HistoryRows,
  j: Judgement,
  prev: Previous,
  live: (position: number, block: number, seq: number, crc: number) => void,
  dead: (block: number, seq: number, successorSeq: number) => void
): void {
  const { cuts, range, fenceSeq, windowStart } = j
  const cutInside = (from: number, to: number): boolean => {
    const i = lowerBound(cuts, from)
    return i < cuts.length && cuts[i] < to
  }
  let { have, block, seq, position, crc } = prev
  for (let i = 0; i < rows.length; i += 4) {
    const vSeq = rows[i + 1]
    if (vSeq > fenceSeq) continue // its block's last version at or before the fence stays live
    if (have) {
      const superseded = rows[i] === block
      // Dead: superseded, written in the range, seen by no snapshot, and its life ends before
      // the history window (points from windowStart on read the successor or later).
      if (superseded && seq >= range.from && seq <= range.to && !cutInside(seq, vSeq) && vSeq <= windowStart) dead(block, seq, vSeq)
      else live(position, block, seq, crc)
    }
    have = true
    block = rows[i]
    seq = vSeq
    position = rows[i + 2]
    crc = rows[i + 3]
  }
  prev.have = have
  prev.block = block
  prev.seq = seq
  prev.position = position
  prev.crc = crc
}

/**
 * Which versions are needed, as log positions, and which are dead. Only positions are kept
 * for the needed ones (8 bytes a version: a 4 GiB image holds a million, and this is what
 * a compaction's peak memory is made of); liveDetails gives the rest for the few it moves.
 * At most `keepDead` dead versions are kept (16 bytes each): past that the list is dropped
 * and only counted, and the caller walks again with deadVersionBatches (a compaction after
 * 15 s of sequential writes found 3.4 million, 52 MiB of list, most of its peak memory).
 */
export async function analyzeVersions (
  history: AsyncIterable<HistoryRows>,
  j: Judgement,
  keepDead = Infinity
): Promise<VersionAnalysis> {
  let dead: RecordList | undefined = new RecordList(2)
  let deadCount = 0
  let horizon = 0
  const positions = new RecordList(1)
  const trimHolders = new Map<number, number>()
  const legacyTrims = new Set<number>()
  // The last trimmed version counted: the next block at one seq held in the same place extends
  // its run. Not a run across holders: blocks trimmed by one entry may be held in different
  // segments (a trim move took only those still needed then; the others' rows stay, with
  // backing storage for good, or after a crash before the pass deleted them), and a holder
  // reached only inside another's run went uncounted, so its trim move entry was freed while
  // rows still named it (simulation seed 7420062: verify found the blocks indexed but not in
  // the log, and a rebuild would bring back what the trims hid).
  let last = { block: -2, seq: -1, crc: -1 }
  await judgeVersions(history, j, (position, block, seq, crc) => {
    if (position >= 0) {
      positions.push1(position)
      return
    }
    // A trim: zeros from here on, nothing to point at.
    if (crc === HELD_BY_OWN_TRIM) {
      legacyTrims.add(seq)
    } else if (last.seq !== seq || last.block !== block - 1 || last.crc !== crc) {
      trimHolders.set(crc - 1, (trimHolders.get(crc - 1) ?? 0) + 1)
    }
    last = { block, seq, crc }
  }, (block, seq, successorSeq) => {
    if (++deadCount > keepDead) dead = undefined
    else dead?.push2(block, seq)
    if (successorSeq - 1 > horizon) horizon = successorSeq - 1
  })
  return { live: sortedPositions(positions), trimHolders, legacyTrims, dead, deadCount, horizon }
}

/**
 * The dead versions of the same judgement again, handed to `take` in lists of `batch` or a
 * little more (whole index reads), in index order, each awaited before the walk goes on: so
 * that a compaction that found millions never holds them at once. `take` owns each list.
 * Returns how many there were.
 */
export async function deadVersionBatches (
  history: AsyncIterable<HistoryRows>,
  j: Judgement,
  batch: number,
  take: (dead: RecordList) => Promise<void>
): Promise<number> {
  let dead = new RecordList(2)
  let count = 0
  const handOver = async (): Promise<void> => {
    const full = dead
    dead = new RecordList(2)
    await take(full)
  }
  await judgeVersions(history, j, () => {}, (block, seq) => {
    dead.push2(block, seq)
    count++
  }, () => dead.length >= batch ? handOver() : undefined)
  if (dead.length > 0) await handOver()
  return count
}

/**
 * The needed versions whose data lies where `wanted` says, with block, seq and CRC: a second
 * walk with the same judgement finds exactly the versions the analysis kept.
 */
export async function liveDetails (
  history: AsyncIterable<HistoryRows>,
  j: Judgement,
  wanted: (position: number) => boolean
): Promise<LiveDetails> {
  const found = new RecordList(4)
  await judgeVersions(history, j, (position, block, seq, crc) => {
    if (position >= 0 && wanted(position)) found.push4(position, block, seq, crc)
  }, () => {})
  const count = found.length
  const out: LiveDetails = { positions: new Float64Array(count), blocks: new Float64Array(count), seqs: new Float64Array(count), crcs: new Uint32Array(count), count }
  const views = found.takeViews()
  let n = 0
  for (const v of views) for (let i = 0; i < v.length; i += 4) out.positions[n++] = v[i]
  sortUnique(out.positions)
  for (const v of views) {
    for (let i = 0; i < v.length; i += 4) {
      const at = lowerBound(out.positions, v[i], count)
      out.blocks[at] = v[i + 1]
      out.seqs[at] = v[i + 2]
      out.crcs[at] = v[i + 3]
    }
  }
  return out
}

/**
 * The needed trimmed versions held in the segments `held` chooses (`holderOf` says where a
 * version's row says it is held), as runs of consecutive blocks trimmed at one seq (at most
 * MAX_TRIM_BLOCKS each), oldest seq first: what trim move entries list. The walk goes in
 * block order, so each seq's blocks come sorted.
 */
export async function liveTrimRuns (
  history: AsyncIterable<HistoryRows>,
  j: Judgement,
  holderOf: (seq: number, crc: number) => number | undefined,
  held: (segment: number) => boolean
): Promise<TrimRun[]> {
  // Runs grow as the walk goes (one open run per seq), so memory follows runs, not blocks: a
  // discard of a whole large volume is millions of trimmed blocks and a few runs.
  const open = new Map<number, TrimRun>()
  const runs: TrimRun[] = []
  await judgeVersions(history, j, (position, block, seq, crc) => {
    if (position >= 0) return
    const holder = holderOf(seq, crc)
    if (holder === undefined || !held(holder)) return
    const run = open.get(seq)
    if (run !== undefined && run.block + run.count === block && run.count < MAX_TRIM_BLOCKS) {
      run.count++
      return
    }
    if (run !== undefined) runs.push(run)
    open.set(seq, { block, seq, count: 1 })
  }, () => {})
  runs.push(...open.values())
  return runs.sort((a, b) => a.seq - b.seq || a.block - b.block)
}

/**
 * The positions in one exact array, sorted by the typed array's own numeric sort in place.
 * It replaced arrays that doubled as they grew, with block, seq and CRC beside each position,
 * and an index permutation sorted by a comparator (which V8 sorts in heap arrays): measured
 * in one process over a 4 GiB store after 3 GiB of 1 MiB writes (786,432 needed versions),
 * compaction's peak RSS went from 66 MiB to 15 MiB above what the writes left.
 */
function sortedPositions (list: RecordList): LiveVersions {
  const positions = new Float64Array(list.length)
  let n = 0
  for (const v of list.takeViews()) { positions.set(v, n); n += v.length }
  sortUnique(positions)
  return { positions, count: positions.length }
}

/** Sorts in place; two needed versions never share log bytes, so equal positions are a broken index. */
function sortUnique (positions: Float64Array): void {
  positions.sort()
  for (let i = 1; i < positions.length; i++) {
    if (positions[i] === positions[i - 1]) throw new LogdiskError('IO', `internal: two needed versions at log position ${positions[i]}`)
  }
}

/** Index of the first live position >= `position`. */
export function firstLiveAtOrAfter (live: LiveVersions, position: number): number {
  return lowerBound(live.positions, position, live.count)
}

/** Whether any needed version's data lies in [from, to). */
export function anyLiveIn (live: LiveVersions, from: number, to: number): boolean {
  const i = firstLiveAtOrAfter(live, from)
  return i < live.count && live.positions[i] < to
}

export interface CompactionReport {
  versionsFreed: number
  /** Index commits that took the freed versions out of the index while the pass ran: 0 when all went in the pass's last commit (COMPACTION_DEAD_BATCH). */
  freeBatches: number
  versionsMoved: number
  /** Trimmed versions moved out of segments being cleaned (trim move entries, store format 5). */
  trimsMoved: number
  segmentsCleaned: number
  entriesFreed: number
  runsPunched: number
  bytesPunched: number
  segmentsRecycled: number
  segmentsInactive: number
  durationMs: number
}
