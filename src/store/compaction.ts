/**
 * Which versions of blocks nobody needs any more (001 Fig. 6, in-place compaction). A version
 * of a block lives from its sequence number until the block's next version; it is needed when
 * it is the newest (the current volume reads it) or when a snapshot cut falls inside its life
 * (that snapshot reads it). Everything else is dead: superseded and pinned by no snapshot.
 *
 * One pass over the index of versions in (block, seq) order plays the role of the seed's
 * reverse scan with a block-encountered table: the next version of each block is the one
 * that follows it in the index.
 */
export interface DeadVersions {
  /** Entry seq -> blocks of that entry that are dead. */
  bySeq: Map<number, number[]>
  count: number
  /** The newest sequence at which a dead version was still the visible one. */
  horizon: number
}

export async function findDeadVersions (
  history: AsyncIterable<[block: number, seq: number, position: number, crc: number]>,
  cuts: number[], // snapshot cut seqs, ascending
  range: { from: number, to: number } // only versions written in this range may be freed
): Promise<DeadVersions> {
  const out: DeadVersions = { bySeq: new Map(), count: 0, horizon: 0 }
  const cutInside = (from: number, to: number): boolean => {
    let lo = 0
    let hi = cuts.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (cuts[mid] < from) lo = mid + 1
      else hi = mid
    }
    return lo < cuts.length && cuts[lo] < to
  }
  let prevBlock = -1
  let prevSeq = 0
  for await (const [block, seq] of history) {
    if (block === prevBlock && prevSeq >= range.from && prevSeq <= range.to && !cutInside(prevSeq, seq)) {
      let blocks = out.bySeq.get(prevSeq)
      if (!blocks) out.bySeq.set(prevSeq, blocks = [])
      blocks.push(prevBlock)
      out.count++
      if (seq - 1 > out.horizon) out.horizon = seq - 1
    }
    prevBlock = block
    prevSeq = seq
  }
  return out
}

export interface CompactionReport {
  versionsFreed: number
  entriesFreed: number
  runsPunched: number
  bytesPunched: number
  segmentsRecycled: number
  segmentsInactive: number
  durationMs: number
}
