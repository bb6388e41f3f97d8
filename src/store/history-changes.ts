import { CHUNK_BLOCKS } from './history-record'
import type { RecordList } from './record-list'

/** What one commit changes in one history record (chunk, seq). */
export interface RecordChange {
  chunk: number
  seq: number
  /**
   * Where its versions are in the batch: [view, from, to] slices of the history's views
   * (block, seq, position, crc records), in the batch's order (a later one wins). A write
   * entry's share of the chunk is one slice: nothing is copied per block.
   */
  sets: Array<[Float64Array, number, number]>
  /** Offsets whose version compaction freed. */
  deletes: number[]
}

/**
 * An index batch's block versions, then its freed versions, grouped by the record they change,
 * in groups of at most `maxRecords` records. A write entry's versions come one after another
 * with one seq, so a run of them in one chunk costs one map lookup, not one per block.
 *
 * Why groups: a record change costs ~300 bytes of heap (object, map key, arrays), and one
 * freed version of a random 4 KiB write is a record of its own. Grouped all at once, the
 * 500,000 dead versions a compaction hands over after a random-write run held 142 MiB until
 * the commit ended (measured, issue 11's memory goal). The caller applies each group and
 * writes it before reading the next (a record can fall in two groups: the second reads what
 * the first wrote), so the result is the same as one group: per record, the sets in batch
 * order, then the deletes.
 */
export function * groupHistory (history: RecordList, deletes: RecordList, maxRecords: number): Generator<RecordChange[]> {
  let byKey = new Map<string, RecordChange>()
  let out: RecordChange[] = []
  let last: RecordChange | undefined
  const changeOf = (chunk: number, seq: number): RecordChange => {
    if (last !== undefined && last.chunk === chunk && last.seq === seq) return last
    const k = `${chunk}:${seq}`
    let c = byKey.get(k)
    if (c === undefined) {
      byKey.set(k, c = { chunk, seq, sets: [], deletes: [] })
      out.push(c)
    }
    return (last = c)
  }
  /** The group so far; a new one starts. */
  const take = (): RecordChange[] => {
    const group = out
    byKey = new Map()
    out = []
    last = undefined
    return group
  }
  for (const h of history.views()) {
    for (let i = 0; i < h.length;) {
      const seq = h[i + 1]
      const chunk = Math.floor(h[i] / CHUNK_BLOCKS)
      let end = i + 4
      while (end < h.length && h[end + 1] === seq && Math.floor(h[end] / CHUNK_BLOCKS) === chunk) end += 4
      changeOf(chunk, seq).sets.push([h, i, end])
      i = end
      if (out.length >= maxRecords) yield take()
    }
  }
  if (out.length > 0) yield take() // every set is applied before any delete
  for (const d of deletes.views()) {
    for (let i = 0; i < d.length; i += 2) {
      const chunk = Math.floor(d[i] / CHUNK_BLOCKS)
      changeOf(chunk, d[i + 1]).deletes.push(d[i] - chunk * CHUNK_BLOCKS)
      if (out.length >= maxRecords) yield take()
    }
  }
  if (out.length > 0) yield take()
}
