import { LogdiskError } from '../errors'
import { BASELINE_BASE } from './baseline'
import type { BaselineOrigin } from './baseline-origins'
import { HISTORY_PREFIX, decodeHistory, historyValue } from './keys'

/**
 * The index rows of a store with a baseline as a replica can use them: every history row
 * that points into the baseline (which a replica never carries) points instead at the log
 * position its version had when it was merged (baseline.pos, baseline-origins.ts); the replica
 * holds that log whole. Rows come in key order, history rows by block then seq, and the
 * origins by block: one merge-join, nothing held per row. A row whose version has no origin
 * (a baseline merged before baseline.pos existed) throws NOT_FOUND: such an index cannot be
 * shipped, and recovery then fetches the whole log instead.
 */
export async function * portableRows (rows: AsyncIterable<[Buffer, Buffer]>, loadOrigins: () => Promise<BaselineOrigin[]>): AsyncGenerator<[Buffer, Buffer]> {
  let origins: BaselineOrigin[] | undefined
  let i = 0
  for await (const [k, v] of rows) {
    if (k[0] !== HISTORY_PREFIX || v.readDoubleBE(0) < BASELINE_BASE) {
      yield [k, v]
      continue
    }
    origins ??= await loadOrigins()
    const h = decodeHistory(k, v)
    while (i < origins.length && origins[i].block < h.block) i++
    const o = origins[i]
    if (o?.block !== h.block || o.seq !== h.seq) {
      throw new LogdiskError('NOT_FOUND', `the baseline holds block ${h.block} at sequence ${h.seq}, and baseline.pos does not say where that version was in the log (merged before baseline.pos existed?)`)
    }
    yield [k, historyValue(o.position, h.crc)]
  }
}
