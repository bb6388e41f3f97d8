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
 * An index batch's block versions and freed versions, grouped by the record they change. A
 * write entry's versions come one after another with one seq, so a run of them in one chunk
 * costs one map lookup, not one per block.
 */
export function groupHistory (history: RecordList, deletes: RecordList): RecordChange[] {
  const byKey = new Map<string, RecordChange>()
  const out: RecordChange[] = []
  const changeOf = (chunk: number, seq: number): RecordChange => {
    const k = `${chunk}:${seq}`
    let c = byKey.get(k)
    if (c === undefined) {
      byKey.set(k, c = { chunk, seq, sets: [], deletes: [] })
      out.push(c)
    }
    return c
  }
  let last: RecordChange | undefined
  for (const h of history.views()) {
    for (let i = 0; i < h.length;) {
      const seq = h[i + 1]
      const chunk = Math.floor(h[i] / CHUNK_BLOCKS)
      let end = i + 4
      while (end < h.length && h[end + 1] === seq && Math.floor(h[end] / CHUNK_BLOCKS) === chunk) end += 4
      if (last === undefined || last.chunk !== chunk || last.seq !== seq) last = changeOf(chunk, seq)
      last.sets.push([h, i, end])
      i = end
    }
  }
  last = undefined
  for (const d of deletes.views()) {
    for (let i = 0; i < d.length; i += 2) {
      const chunk = Math.floor(d[i] / CHUNK_BLOCKS)
      if (last === undefined || last.chunk !== chunk || last.seq !== d[i + 1]) last = changeOf(chunk, d[i + 1])
      last.deletes.push(d[i] - chunk * CHUNK_BLOCKS)
    }
  }
  return out
}
