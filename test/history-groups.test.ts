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

/**
 * IndexDb.commit's `committedThrough`: records of entries after the last checkpoint that only
 * gain versions are written without a read. The rows must be the same as with reads: also when
 * such a record falls in two groups (the second must read what the first wrote), when a commit
 * failed part way and the same versions are committed again (IndexWriter's retry), and when the
 * next batch frees versions of those records.
 */
async function rowsUnread (list: IndexBatch[], chunkOps: number, failAfterWrites?: number): Promise<{ rows: string[], reads: number }> {
  let writes = 0
  let reads = 0
  let failing = failAfterWrites !== undefined
  const gate = async (label: string): Promise<void> => {
    if (label === 'index.read') reads++
    if (label === 'index.commit' && failing && ++writes > failAfterWrites!) { failing = false; throw new Error('disk full') }
  }
  const db = await IndexDb.openLevel(new MemoryLevel({ keyEncoding: 'buffer', valueEncoding: 'buffer' }) as unknown as LevelDb, gate)
  let through = 0
  reads = 0 // opening read the index too
  for (const b of list) {
    const seq = through + 100 // past every seq the batch holds
    const tried = await db.commit(b, { seq, position: 0, timeMs: 0 }, chunkOps, through).then(() => 'ok', (err: Error) => err.message)
    if (tried !== 'ok') await db.commit(b, { seq, position: 0, timeMs: 0 }, chunkOps, through) // tried again whole, as after a failure
    through = seq
  }
  const commitReads = reads
  const rows: string[] = []
  for await (const [k, v] of db.dump()) if (k[0] !== 0x63) rows.push(`${k.toString('hex')}=${v.toString('hex')}`) // not the checkpoint
  await db.close()
  return { rows, reads: commitReads }
}

t.test('records of new entries written without a read give the same rows', async t => {
  const withoutCheckpoint = (rows: string[]): string[] => rows.filter(r => !r.startsWith('63'))
  for (const seed of [1, 2, 3]) {
    const one = withoutCheckpoint(await rowsAfter(batches(new Rng(seed)), 1 << 20))
    for (const chunkOps of [1, 2, 7, 1 << 20]) {
      for (const failAfterWrites of [undefined, 0, 1, 3]) {
        const got = await rowsUnread(batches(new Rng(seed)), chunkOps, failAfterWrites)
        t.same(got.rows, one, `seed ${seed}, groups of ${chunkOps} records${failAfterWrites !== undefined ? `, the first try failed after ${failAfterWrites} writes` : ''}`)
      }
    }
  }
})

t.test('a batch of new entries only is committed without reading the index', async t => {
  const batch = new IndexBatch()
  for (let seq = 1; seq <= 200; seq++) batch.addBlock((seq * 7919) % (40 * CHUNK_BLOCKS), seq, seq * 8192, seq)
  t.equal((await rowsUnread([batch], 1 << 20)).reads, 0, 'no record read')
  const moved = new IndexBatch()
  moved.addBlock(7919, 1, 1e9, 1) // a move keeps the version's seq (1): its record is there
  const both = await rowsUnread([batch, moved], 1 << 20)
  t.equal(both.reads, 1, 'the move reads its record')
  t.ok(both.rows.length > 0)
})

t.test('a record of a new entry that only loses versions is read, so the loss reaches the index', async t => {
  // Its sets went in by an earlier try (a commit that failed after writing them); this batch
  // only frees one: were it taken as new, nothing would be read, nothing written, and the
  // freed version would stay.
  const db = await IndexDb.openLevel(new MemoryLevel({ keyEncoding: 'buffer', valueEncoding: 'buffer' }) as unknown as LevelDb)
  const sets = new IndexBatch()
  sets.addBlock(3, 5, 8192, 1)
  sets.addBlock(4, 5, 12288, 2)
  await db.commit(sets, { seq: 5, position: 0, timeMs: 0 })
  const frees = new IndexBatch()
  frees.historyDeletes.push2(3, 5)
  await db.commit(frees, { seq: 6, position: 0, timeMs: 0 }, undefined, 0)
  t.same(await db.versionAt(3, 5), undefined, 'the freed version is gone')
  t.same((await db.versionAt(4, 5))?.position, 12288, 'the other version is kept')
  await db.close()
})
