import { LogdiskError } from '../errors'
import { BASELINE_BASE } from './baseline'
import type { BaselineOrigin } from './baseline-origins'
import { CHUNK_BLOCKS, ChunkVersions } from './history-record'
import { RECORD_PREFIX, decodeRecordKey } from './keys'

/**
 * The index rows of a store with a baseline as a replica can use them: every version in a
 * history record that points into the baseline (which a replica never carries) points
 * instead at the log position it had when it was merged (baseline.pos, baseline-origins.ts);
 * the replica holds that log whole. The origins are loaded once, at the first such version
 * (the baseline holds one version per block, so they are looked up by block). A version with
 * no origin (a baseline merged before baseline.pos existed) throws NOT_FOUND: such an index
 * cannot be shipped, and recovery then fetches the whole log instead.
 */
export async function * portableRows (rows: AsyncIterable<[Buffer, Buffer]>, loadOrigins: () => Promise<BaselineOrigin[]>): AsyncGenerator<[Buffer, Buffer]> {
  let origins: Map<number, BaselineOrigin> | undefined
  const table = new ChunkVersions()
  for await (const [k, v] of rows) {
    if (k[0] !== RECORD_PREFIX) {
      yield [k, v]
      continue
    }
    table.decode(v)
    const { chunk, seq } = decodeRecordKey(k)
    let changed = false
    for (let o = 0; o < CHUNK_BLOCKS; o++) {
      if (table.has[o] === 0 || table.positions[o] < BASELINE_BASE) continue
      origins ??= new Map((await loadOrigins()).map(x => [x.block, x]))
      const block = chunk * CHUNK_BLOCKS + o
      const origin = origins.get(block)
      if (origin?.seq !== seq) {
        throw new LogdiskError('NOT_FOUND', `the baseline holds block ${block} at sequence ${seq}, and baseline.pos does not say where that version was in the log (merged before baseline.pos existed?)`)
      }
      table.positions[o] = origin.position
      changed = true
    }
    yield [k, changed ? table.encode()! : v]
  }
}
