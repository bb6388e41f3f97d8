import { MemoryLevel } from 'memory-level'
import t from 'tap'
import { groupHistory } from '../src/store/history-changes'
import { CHUNK_BLOCKS } from '../src/store/history-record'
import { IndexBatch, IndexDb, type LevelDb } from '../src/store/index-db'
import { Rng } from '../src/testing/rng'

/**
 * A commit groups its history changes by record in bounded groups (history-changes.ts), so a
 * compaction's hundreds of thousands of freed versions never become one object each at once
 * (issue 11's memory goal). Groups must not change the result: a record split across two
 * groups is read again by the second, and every set goes before any delete.
 */

/** Two batches over a few chunks: random versions, then more versions and deletes of some of the first. */
function batches (rng: Rng): IndexBatch[] {
  const first = new IndexBatch()
  const written: Array<[number, number]> = []
  let seq = 1
  for (let e = 0; e < 60; e++, seq++) {
    const block = rng.int(4 * CHUNK_BLOCKS - 8)
    const n = 1 + rng.int(8)
    for (let i = 0; i < n; i++) { first.addBlock(block + i, seq, seq * 1e6 + i * 4096, rng.int(2 ** 32)); written.push([block + i, seq]) }
  }
  const second = new IndexBatch()
  for (let e = 0; e < 30; e++, seq++) {
    const block = rng.int(4 * CHUNK_BLOCKS)
    second.addBlock(block, seq, seq * 1e6, rng.int(2 ** 32))
  }
  // In (block, seq) order, as compaction finds them: one record's deletes are far apart.
  written.sort((a, b) => a[0] - b[0] || a[1] - b[1])
  for (const [block, s] of written) if (rng.int(3) === 0) second.historyDeletes.push2(block, s)
  return [first, second]
}

async function rowsAfter (list: IndexBatch[], chunkOps: number): Promise<string[]> {
  const db = await IndexDb.openLevel(new MemoryLevel({ keyEncoding: 'buffer', valueEncoding: 'buffer' }) as unknown as LevelDb)
  let n = 0
  for (const b of list) await db.commit(b, { seq: ++n, position: 0, timeMs: 0 }, chunkOps)
  const rows: string[] = []
  for await (const [k, v] of db.dump()) rows.push(`${k.toString('hex')}=${v.toString('hex')}`)
  await db.close()
  return rows
}

t.test('committing in groups of a few records gives the rows of one group', async t => {
  for (const seed of [1, 2, 3]) {
    const one = await rowsAfter(batches(new Rng(seed)), 1 << 20)
    for (const chunkOps of [1, 2, 7]) {
      t.same(await rowsAfter(batches(new Rng(seed)), chunkOps), one, `seed ${seed}, groups of ${chunkOps} records`)
    }
  }
})

t.test('groups hold at most maxRecords records and every set comes before any delete', async t => {
  const [, second] = batches(new Rng(9))
  second.addBlock(5, 1, 0, 0) // a set of record (0, 1), which the deletes also change
  second.historyDeletes.push2(6, 1)
  const groups = [...groupHistory(second.history, second.historyDeletes, 4)]
  t.ok(groups.length > 2, `${groups.length} groups`)
  let deletesSeen = false
  let sets = 0
  let deletes = 0
  for (const g of groups) {
    t.ok(g.length >= 1 && g.length <= 4, `a group of ${g.length}`)
    for (const c of g) {
      if (c.sets.length > 0) t.notOk(deletesSeen, `the set of record (${c.chunk}, ${c.seq}) comes before every delete`)
      if (c.deletes.length > 0) deletesSeen = true
      for (const [, from, to] of c.sets) sets += (to - from) / 4
      deletes += c.deletes.length
    }
  }
  t.equal(sets, second.history.length, 'every version set once')
  t.equal(deletes, second.historyDeletes.length, 'every freed version deleted once')
})
