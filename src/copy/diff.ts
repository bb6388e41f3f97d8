import type { Store } from '../store'

export interface DiffRange {
  /** First block of the range. */
  start: number
  /** Last block of the range (inclusive). */
  end: number
  count: number
  /** Byte offset and length of the range in the image. */
  offset: number
  bytes: number
}

export interface DiffResult {
  from: { name: string, seq: number }
  to: { name: string, seq: number }
  blockBytes: number
  blocks: number
  bytes: number
  ranges: DiffRange[]
}

/**
 * The blocks written between snapshots `a` and `b` (in either order: the blocks with a version
 * after the older cut and at or before the newer), merged into ranges of adjacent blocks.
 */
export async function diffSnapshots (store: Store, a: string, b: string): Promise<DiffResult> {
  const A = store.snapshotNamed(a)
  const Bs = store.snapshotNamed(b)
  const [lo, hi] = A.seq <= Bs.seq ? [A.seq, Bs.seq] : [Bs.seq, A.seq]
  const B = store.blockBytes
  const ranges: DiffRange[] = []
  let blocks = 0
  for await (const block of store.changedBlocks(lo, hi)) {
    blocks++
    const last = ranges[ranges.length - 1]
    if (last && last.end + 1 === block) {
      last.end = block
      last.count++
      last.bytes += B
    } else {
      ranges.push({ start: block, end: block, count: 1, offset: block * B, bytes: B })
    }
  }
  return { from: { name: A.name, seq: A.seq }, to: { name: Bs.name, seq: Bs.seq }, blockBytes: B, blocks, bytes: blocks * B, ranges }
}
