import { CHUNK_BLOCKS } from './history-record'
import type { RecordList } from './record-list'

/** What one commit changes in one history record (chunk, seq). */
export interface RecordChange {
  chunk: number
  seq: number
  /** offset in the chunk, position, crc; in the batch's order (a later one wins). */
  sets: number[]
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
    for (let i = 0; i < h.length; i += 4) {
      const block = h[i]
      const seq = h[i + 1]
      const chunk = Math.floor(block / CHUNK_BLOCKS)
      if (last === undefined || last.chunk !== chunk || last.seq !== seq) last = changeOf(chunk, seq)
      last.sets.push(block - chunk * CHUNK_BLOCKS, h[i + 2], h[i + 3])
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
