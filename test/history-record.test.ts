// History records (src/store/history-record.ts, index layout 3): one LevelDB row per log entry
// and 64-block chunk instead of one per block version. Checked against a plain model of
// (block, seq) -> (position, crc): the record codec, commits of writes, trims, compaction's
// moves and frees across many checkpoints (history(), versionsAt at every cut, loadNewest),
// and the conversion of a layout-2 index, also when a crash stops it midway.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { MemoryLevel } from 'memory-level'
import { CHUNK_BLOCKS, ChunkVersions, forEachVersion, versionIn } from '../src/store/history-record'
import { IndexBatch, IndexDb, type LevelDb } from '../src/store/index-db'
import { BlockMap } from '../src/store/block-map'
import { TRIMMED } from '../src/store/format'
import { BASELINE_BASE } from '../src/store/baseline'
import { HISTORY_PREFIX, RECORD_PREFIX, VERSION_KEY, historyKey, historyValue, prefixRange } from '../src/store/keys'
import { Rng } from '../src/testing/rng'
import { pack } from 'msgpackr'

const B = 4096

t.test('a record gives back every version it was given, whatever the mix of runs', async t => {
  const rng = new Rng(7)
  for (let round = 0; round < 2000; round++) {
    const table = new ChunkVersions()
    const want = new Map<number, [number, number]>()
    let pos = rng.int(2 ** 40) * B
    for (let o = 0; o < CHUNK_BLOCKS; o++) {
      if (!rng.chance(0.6)) continue
      const kind = rng.int(5)
      // mostly runs (consecutive positions), some trims, some moved versions anywhere, some baseline ones
      pos = kind === 0 ? TRIMMED : kind === 1 ? rng.int(2 ** 40) * B : kind === 2 ? BASELINE_BASE + (round * CHUNK_BLOCKS + o) * B : pos + B
      const crc = rng.int(2 ** 32)
      table.set(o, pos, crc)
      want.set(o, [pos, crc])
    }
    if (rng.chance(0.3) && want.size > 0) { const o = [...want.keys()][rng.int(want.size)]; table.delete(o); want.delete(o) }
    const value = table.encode()
    if (want.size === 0) { t.equal(value, undefined); continue }
    const got = new Map<number, [number, number]>()
    forEachVersion(value!, (o, p, c) => got.set(o, [p, c]))
    if (JSON.stringify([...got]) !== JSON.stringify([...want])) { t.fail(`round ${round}: ${JSON.stringify([...got])} != ${JSON.stringify([...want])}`); return }
    for (let o = 0; o < CHUNK_BLOCKS; o++) {
      const v = versionIn(value!, o)
      const w = want.get(o)
      if ((v === undefined) !== (w === undefined) || (v && (v.position !== w![0] || v.crc !== w![1]))) { t.fail(`round ${round}: versionIn(${o})`); return }
    }
    t.same(new ChunkVersions().decode(value!).count, want.size)
  }
  // A fresh 64-block write is one run: its record is 18 + 4 bytes a block.
  const run = new ChunkVersions()
  for (let o = 0; o < CHUNK_BLOCKS; o++) run.set(o, 1_000_000 + o * B, o)
  t.equal(run.encode()!.length, 18 + 4 * CHUNK_BLOCKS, 'a written chunk is one run')
})

/** The model: every version of every block, and what a cut sees. */
class Model {
  readonly versions = new Map<number, Map<number, [number, number]>>()
  set (block: number, seq: number, position: number, crc: number): void {
    let m = this.versions.get(block)
    if (!m) this.versions.set(block, m = new Map())
    m.set(seq, [position, crc])
  }

  del (block: number, seq: number): void {
    this.versions.get(block)?.delete(seq)
  }

  rows (): Array<[number, number, number, number]> {
    const out: Array<[number, number, number, number]> = []
    for (const block of [...this.versions.keys()].sort((a, b) => a - b)) {
      for (const seq of [...this.versions.get(block)!.keys()].sort((a, b) => a - b)) out.push([block, seq, ...this.versions.get(block)!.get(seq)!])
    }
    return out
  }

  at (block: number, seq: number): { seq: number, position: number, crc: number } | undefined {
    let best: number | undefined
    for (const s of this.versions.get(block)?.keys() ?? []) if (s <= seq && (best === undefined || s > best)) best = s
    if (best === undefined) return undefined
    const [position, crc] = this.versions.get(block)!.get(best)!
    return { seq: best, position, crc }
  }
}

/** Rows equal, or the first that differs (tap's diff of thousands of rows takes minutes). */
function sameRows (t: Test, got: number[][], want: number[][], what: string): void {
  let i = 0
  while (i < Math.max(got.length, want.length) && JSON.stringify(got[i]) === JSON.stringify(want[i])) i++
  if (i === Math.max(got.length, want.length)) t.pass(`${what} (${got.length} rows)`)
  else t.fail(`${what}: row ${i} is ${JSON.stringify(got[i])}, should be ${JSON.stringify(want[i])} (${got.length} rows, ${want.length} expected)`)
}

async function collect (db: IndexDb, from = 0): Promise<Array<[number, number, number, number]>> {
  const out: Array<[number, number, number, number]> = []
  for await (const row of db.history(from)) out.push(row)
  return out
}

/** Random entries as the store makes them: writes and trims of a range, moves and frees of single versions. */
/**
 * `unreadNew`: each commit is told the seq the one before covered (IndexDb.commit's
 * `committedThrough`, as IndexWriter does), so records of entries after it that only gain
 * versions are written without being read; moves and frees here also reach versions of the
 * same batch, whose records it must then read.
 */
async function drive (rng: Rng, db: IndexDb, model: Model, blocks: number, commits: number, chunkOps: number, unreadNew = false): Promise<number> {
  let seq = 0
  let position = 4096
  for (let c = 0; c < commits; c++) {
    const committed = seq
    const batch = new IndexBatch()
    for (let e = 0, n = 1 + rng.int(30); e < n; e++) {
      const kind = rng.int(10)
      if (kind < 6) { // a write of up to 200 blocks, often across chunk boundaries
        seq++
        const count = 1 + rng.int(rng.chance(0.5) ? 8 : 200)
        const first = rng.int(blocks - count)
        position += 64
        for (let i = 0; i < count; i++) { const crc = rng.int(2 ** 32); batch.addBlock(first + i, seq, position + i * B, crc); model.set(first + i, seq, position + i * B, crc) }
        position += count * B
      } else if (kind < 7) { // a trim
        seq++
        const count = 1 + rng.int(100)
        const first = rng.int(blocks - count)
        for (let i = 0; i < count; i++) { batch.addBlock(first + i, seq, TRIMMED, 0); model.set(first + i, seq, TRIMMED, 0) }
      } else { // compaction: some existing versions move to new positions, others are freed
        const all = model.rows()
        if (all.length === 0) continue
        for (let k = 0, n = 1 + rng.int(20); k < n; k++) {
          const [block, vseq, , crc] = all[rng.int(all.length)]
          if (!model.versions.get(block)?.has(vseq)) continue
          if (rng.chance(0.5)) { position += B; batch.addBlock(block, vseq, position, crc); model.set(block, vseq, position, crc) } else { batch.historyDeletes.push2(block, vseq); model.del(block, vseq) }
        }
      }
    }
    await db.commit(batch, { seq, position, timeMs: c }, chunkOps, unreadNew ? committed : undefined)
  }
  return seq
}

async function checkAgainst (t: Test, db: IndexDb, model: Model, blocks: number, lastSeq: number, rng: Rng, what: string): Promise<void> {
  sameRows(t, await collect(db), model.rows(), `${what}: history() gives every version in (block, seq) order`)
  const from = rng.int(blocks)
  sameRows(t, await collect(db, from), model.rows().filter(r => r[0] >= from), `${what}: history(${from}) starts at that block`)
  // historyBatches with few records per read: a chunk's records span reads, and a batch gives only whole chunks.
  for (const readRows of [1, 3, 7]) {
    const flat: Array<[number, number, number, number]> = []
    // A batch's first chunk must come after the chunk the batch before it ended in.
    let split = 0
    let lastChunk = -1
    for await (const rows of db.historyBatches(from, readRows)) {
      t.equal(rows.length % 4, 0)
      if (Math.floor(rows[0] / CHUNK_BLOCKS) <= lastChunk) split++
      for (let i = 0; i < rows.length; i += 4) flat.push([rows[i], rows[i + 1], rows[i + 2], rows[i + 3]])
      lastChunk = Math.floor(rows[rows.length - 4] / CHUNK_BLOCKS)
    }
    sameRows(t, flat, model.rows().filter(r => r[0] >= from), `${what}: historyBatches(${from}, ${readRows}) gives the same rows`)
    t.equal(split, 0, `${what}: no chunk is split between batches (reads of ${readRows})`)
  }
  let wrong = 0
  for (let k = 0; k < 12; k++) {
    const cut = rng.int(lastSeq + 1)
    const ask = [...new Set(Array.from({ length: 1 + rng.int(300) }, () => rng.int(blocks)))].sort((a, b) => a - b)
    const got = await db.versionsAt(ask, cut)
    ask.forEach((b, i) => { if (JSON.stringify(got[i]) !== JSON.stringify(model.at(b, cut))) wrong++ })
    const one = ask[0]
    if (JSON.stringify(await db.versionAt(one, cut)) !== JSON.stringify(model.at(one, cut))) wrong++
  }
  t.equal(wrong, 0, `${what}: versionsAt and versionAt at random cuts agree with the model`)
  const map = new BlockMap()
  await db.loadNewest(map)
  let mapWrong = 0
  for (let b = 0; b < blocks; b++) {
    const m = model.at(b, Infinity)
    if (m === undefined ? map.position(b) !== -1 : map.seq(b) !== m.seq || map.position(b) !== m.position || (m.position >= 0 && map.crc(b) !== m.crc)) mapWrong++
  }
  t.equal(mapWrong, 0, `${what}: loadNewest holds each block's newest version`)
}

t.test('commits of writes, trims, moves and frees read back as the model, at every cut', async t => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-records-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  for (const [seed, unreadNew] of [[1, false], [2, false], [3, false], [1, true], [4, true], [5, true]] as const) {
    const rng = new Rng(seed)
    const db = await IndexDb.open(path.join(dir, `db-${seed}-${unreadNew}`))
    const model = new Model()
    const blocks = 700
    const lastSeq = await drive(rng, db, model, blocks, 25, seed === 1 ? 3 : 8192, unreadNew)
    await checkAgainst(t, db, model, blocks, lastSeq, rng, `seed ${seed}${unreadNew ? ', new records unread' : ''}`)
    let rows = 0
    for await (const _ of dbRows(db, RECORD_PREFIX)) rows++
    t.ok(rows > 0 && rows < model.rows().length, `seed ${seed}: ${rows} records hold ${model.rows().length} versions`)
    await db.close()
  }
})

function dbRows (db: IndexDb, prefix: number): AsyncGenerator<[Buffer, Buffer]> {
  return (async function * () { for await (const row of db.dump()) if (row[0][0] === prefix) yield row })()
}

/** A layout-2 index holding the model's versions: a key per block version. */
async function layout2 (db: LevelDb, model: Model): Promise<void> {
  const ops: Array<{ type: 'put', key: Buffer, value: Buffer }> = model.rows().map(([b, s, p, c]) => ({ type: 'put', key: historyKey(b, s), value: historyValue(p, c) }))
  ops.push({ type: 'put', key: VERSION_KEY, value: pack(2) })
  await db.batch(ops)
}

t.test('a layout-2 index converts to records, also after a crash stopped the conversion midway', async t => {
  const rng = new Rng(11)
  const model = new Model()
  let seq = 0
  for (let e = 0; e < 3000; e++) {
    seq++
    const count = 1 + rng.int(rng.chance(0.3) ? 150 : 4)
    const first = rng.int(20_000 - count)
    const trim = rng.chance(0.1)
    for (let i = 0; i < count; i++) model.set(first + i, seq, trim ? TRIMMED : seq * 1_000_000 + i * B, trim ? 0 : rng.int(2 ** 32))
  }
  for (const crashAfter of [Infinity, 1, 2]) {
    const mem = new MemoryLevel<Buffer, Buffer>({ keyEncoding: 'buffer', valueEncoding: 'buffer' }) as unknown as LevelDb
    await layout2(mem, model)
    let commits = 0
    const gate = async (label: string): Promise<void> => { if (label === 'index.commit' && ++commits > crashAfter) throw new Error('power lost') }
    const db = await IndexDb.openLevel(mem, gate)
    const tried = await db.upgradeFromLayout2().then(() => 'done', (err: Error) => err.message)
    if (crashAfter === Infinity) {
      t.equal(tried, 'done')
    } else {
      t.equal(tried, 'power lost', `the conversion stopped after ${crashAfter} LevelDB writes`)
      t.equal(await db.formatVersion(), 2, 'the index still says layout 2')
      let left = 0
      for await (const _ of dbRows(db, HISTORY_PREFIX)) left++
      t.ok(left > 0 && left < model.rows().length, `${left} of ${model.rows().length} layout-2 keys left to convert`)
      await IndexDb.openLevel(mem).then(again => again.upgradeFromLayout2()) // the next open converts the rest
    }
    const done = await IndexDb.openLevel(mem)
    t.equal(await done.formatVersion(), 3, 'layout 3 once converted')
    let left = 0
    for await (const _ of dbRows(done, HISTORY_PREFIX)) left++
    t.equal(left, 0, 'no layout-2 key is left')
    await checkAgainst(t, done, model, 20_000, seq, rng, `converted (crash after ${crashAfter})`)
  }
  t.same(prefixRange(RECORD_PREFIX).gte, Buffer.from('x'))
})
