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

export interface LiveVersions {
  /** Sorted log positions of every needed version's data. */
  positions: Float64Array
  /** Same order: block, original seq, CRC of each. */
  blocks: Float64Array
  seqs: Float64Array
  crcs: Uint32Array
  count: number
}

export interface VersionAnalysis {
  live: LiveVersions
  /** Sequence numbers of trim entries with a version still needed (they have no data to find by position). */
  liveTrims: Set<number>
  /** The dead versions (their index keys go): block and seq of each, in index order, in chunks (no object per version, no array copied as it grows). */
  dead: RecordList
  deadCount: number
  /** The newest sequence at which a dead version was still the visible one. */
  horizon: number
}

class Collector {
  positions = new Float64Array(1024)
  blocks = new Float64Array(1024)
  seqs = new Float64Array(1024)
  crcs = new Uint32Array(1024)
  count = 0

  push (position: number, block: number, seq: number, crc: number): void {
    if (this.count === this.positions.length) {
      const grow = <T extends Float64Array | Uint32Array>(a: T): T => { const b = new (a.constructor as new (n: number) => T)(a.length * 2); b.set(a); return b }
      this.positions = grow(this.positions)
      this.blocks = grow(this.blocks)
      this.seqs = grow(this.seqs)
      this.crcs = grow(this.crcs)
    }
    this.positions[this.count] = position
    this.blocks[this.count] = block
    this.seqs[this.count] = seq
    this.crcs[this.count] = crc
    this.count++
  }

  /** Sorted by position. */
  finish (): LiveVersions {
    const order = new Uint32Array(this.count)
    for (let i = 0; i < this.count; i++) order[i] = i
    order.sort((a, b) => this.positions[a] - this.positions[b])
    const out: LiveVersions = { positions: new Float64Array(this.count), blocks: new Float64Array(this.count), seqs: new Float64Array(this.count), crcs: new Uint32Array(this.count), count: this.count }
    order.forEach((from, to) => {
      out.positions[to] = this.positions[from]
      out.blocks[to] = this.blocks[from]
      out.seqs[to] = this.seqs[from]
      out.crcs[to] = this.crcs[from]
    })
    return out
  }
}

export async function analyzeVersions (
  history: AsyncIterable<[block: number, seq: number, position: number, crc: number]>,
  cuts: number[], // snapshot cut seqs, ascending
  range: { from: number, to: number }, // only versions written in this range may be found dead
  /** The pass's fence (pass-fence.ts): versions after it are not seen at all. */
  fenceSeq = Number.MAX_SAFE_INTEGER,
  /** Every point from this sequence on is protected (the history window, history.keep). */
  windowStart = Number.MAX_SAFE_INTEGER
): Promise<VersionAnalysis> {
  const dead = new RecordList(2)
  let horizon = 0
  const live = new Collector()
  const liveTrims = new Set<number>()
  const keep = (position: number, block: number, seq: number, crc: number): void => {
    if (position < 0) liveTrims.add(seq) // a trim: zeros from here on, nothing to point at
    else live.push(position, block, seq, crc)
  }
  const cutInside = (from: number, to: number): boolean => {
    const i = lowerBound(cuts, from)
    return i < cuts.length && cuts[i] < to
  }
  // The previous version (block, seq, position, crc); havePrev false before the first.
  let havePrev = false
  let block = 0
  let seq = 0
  let position = 0
  let crc = 0
  for await (const v of history) {
    if (v[1] > fenceSeq) continue // its block's last version at or before the fence stays live
    if (havePrev) {
      const superseded = v[0] === block
      // Dead: superseded, written in the range, seen by no snapshot, and its life ends before
      // the history window (points from windowStart on read the successor or later).
      if (superseded && seq >= range.from && seq <= range.to && !cutInside(seq, v[1]) && v[1] <= windowStart) {
        dead.push2(block, seq)
        if (v[1] - 1 > horizon) horizon = v[1] - 1
      } else {
        keep(position, block, seq, crc)
      }
    }
    havePrev = true
    block = v[0]
    seq = v[1]
    position = v[2]
    crc = v[3]
  }
  if (havePrev) keep(position, block, seq, crc)
  return { live: live.finish(), liveTrims, dead, deadCount: dead.length, horizon }
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
  versionsMoved: number
  segmentsCleaned: number
  entriesFreed: number
  runsPunched: number
  bytesPunched: number
  segmentsRecycled: number
  segmentsInactive: number
  durationMs: number
}
