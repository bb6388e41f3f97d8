import { MemoryLevel } from 'memory-level'
import t from 'tap'
import { CHUNK_BLOCKS } from '../src/store/history-record'
import { IndexBatch, IndexDb, type LevelDb } from '../src/store/index-db'
import { Rng } from '../src/testing/rng'

/**
 * IndexDb.historyBatches gives every version in (block, seq) order, a chunk of 64 blocks at
 * a time sorted in memory. A chunk with one block rewritten a million times inside the history
 * window was held whole by both of compaction's walks (300,000 versions of one block took a
 * pass from 105 to 166 MiB, measured): a chunk with more than `holdVersions` is now read again
 * by groups of blocks. The order must be exactly the same, whatever the limit and the reads.
 */

/** A history over five chunks: random runs, one block written alone very often (chunk 1), three neighbours often together (chunk 2). */
async function history (rng: Rng): Promise<{ db: IndexDb, all: number[][] }> {
  const db = await IndexDb.openLevel(new MemoryLevel({ keyEncoding: 'buffer', valueEncoding: 'buffer' }) as unknown as LevelDb)
  const all: number[][] = []
  let batch = new IndexBatch()
  for (let seq = 1; seq <= 3000; seq++) {
    const r = rng.next()
    const [block, n] = r < 0.4 ? [CHUNK_BLOCKS + 6, 1] : r < 0.6 ? [2 * CHUNK_BLOCKS + 10, 3] : [rng.int(5 * CHUNK_BLOCKS - 8), 1 + rng.int(8)]
    for (let i = 0; i < n; i++) {
      const v = [block + i, seq, seq * 1e6 + i * 4096, (seq * 7919 + block + i) % 2 ** 32]
      batch.addBlock(v[0], v[1], v[2], v[3])
      all.push(v)
    }
    if (seq % 250 === 0) {
      await db.commit(batch, { seq, position: 0, timeMs: 0 })
      batch = new IndexBatch()
    }
  }
  all.sort((a, b) => a[0] - b[0] || a[1] - b[1])
  return { db, all }
}

async function walk (db: IndexDb, from: number, readRows: number, hold?: number): Promise<{ rows: number[][], largest: number }> {
  const rows: number[][] = []
  let largest = 0
  for await (const batch of db.historyBatches(from, readRows, hold)) {
    largest = Math.max(largest, batch.length / 4)
    for (let i = 0; i < batch.length; i += 4) rows.push([batch[i], batch[i + 1], batch[i + 2], batch[i + 3]])
  }
  return { rows, largest }
}

t.test('a chunk too big to hold is given out in the same order, in bounded batches', async t => {
  const { db, all } = await history(new Rng(7))
  const whole = await walk(db, 0, 4096)
  t.equal(whole.rows.length, all.length, `${all.length} versions`)
  t.same(whole.rows, all, 'held whole (the default limit): every version in (block, seq) order')
  t.ok(whole.largest > 1200, `the hot chunk came in one batch of ${whole.largest}`)
  for (const [readRows, hold] of [[7, 50], [1, 1], [64, 300], [4096, 200], [3, 1000]]) {
    const got = await walk(db, 0, readRows, hold)
    t.same(got.rows, all, `reads of ${readRows} records, at most ${hold} versions held: the same order`)
    t.ok(got.largest <= hold + readRows * CHUNK_BLOCKS, `largest batch ${got.largest} versions`)
  }
  for (const from of [CHUNK_BLOCKS + 3, CHUNK_BLOCKS + 7, 2 * CHUNK_BLOCKS + 11]) {
    const got = await walk(db, from, 5, 40)
    t.same(got.rows, all.filter(v => v[0] >= from), `from block ${from}: only the blocks from it, in order`)
  }
})
