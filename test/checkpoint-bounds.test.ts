import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { MemoryLevel } from 'memory-level'
import t, { type Test } from 'tap'
import { COMMIT_CHUNK_OPS, IndexDb, READ_MANY, type LevelDb } from '../src/store/index-db'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'

/**
 * Bounded checkpoints (index-writer.ts, index-db.ts): a checkpoint is written into LevelDB in
 * chunks (no single huge write batch, a bounded pause per chunk), and writers wait once the
 * batch waiting behind a checkpoint in flight grows past 4 x checkpointMaxBlocks (a bound on
 * its memory).
 */
const B = 4096
const SIZE = 16 * 1024 * 1024

function tmpDir (t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-cpbounds-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

t.test('a checkpoint far larger than one index write commits in chunks and survives a reopen', async t => {
  const dir = tmpDir(t)
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: 4 * 1024 * 1024 })
  const store = await Store.open(dir, { checkpointIntervalMs: 0, checkpointMaxBlocks: 1 << 20, indexCommitChunkOps: 64 })
  const rng = new Rng(0xc4)
  const want = Buffer.alloc(SIZE)
  for (let i = 0; i < 300; i++) {
    const block = rng.int(SIZE / B - 8)
    const data = rng.bytes(B * (1 + rng.int(8)))
    data.copy(want, block * B)
    await store.write(block * B, data)
  }
  t.ok(store.status().index.pendingBlocks > 64 * 10, 'many chunks wait')
  await store.checkpoint()
  const st = store.status()
  t.equal(st.index.checkpointSeq, st.index.seq, 'the checkpoint covers every entry')
  t.equal(st.index.pendingBlocks, 0)
  await store.close()
  const again = await Store.open(dir, { checkpointIntervalMs: 0 })
  t.equal(again.status().recovery.replayedEntries, 0, 'nothing to replay')
  t.same(await again.read(0, SIZE), want)
  const v = await again.verify()
  t.ok(v.ok, v.problems.join('; '))
  await again.close()
})

t.test('a checkpoint holds the event loop for one bounded slice at a time: LevelDB writes of at most COMMIT_CHUNK_OPS, reads of at most READ_MANY', async t => {
  // What runs between two awaits of a commit delays every FUSE request behind it (index-db.ts
  // COMMIT_CHUNK_OPS): every write and read the commit makes is counted here.
  const level = new MemoryLevel({ keyEncoding: 'buffer', valueEncoding: 'buffer' }) as unknown as LevelDb
  const writes: number[] = []
  const reads: number[] = []
  const batch = level.batch.bind(level)
  ;(level as any).batch = (...args: unknown[]) => {
    if (args.length > 0) return (batch as any)(...args)
    const chained = batch()
    const write = chained.write.bind(chained)
    ;(chained as any).write = (...a: unknown[]) => { writes.push(chained.length); return (write as any)(...a) }
    return chained
  }
  const getMany = level.getMany.bind(level)
  ;(level as any).getMany = (keys: Buffer[], ...a: unknown[]) => { reads.push(keys.length); return (getMany as any)(keys, ...a) }
  const dir = tmpDir(t)
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: 4 * 1024 * 1024 })
  const store = await Store.open(dir, { checkpointIntervalMs: 0, checkpointMaxBlocks: 1 << 20, historyKeepMs: 0, openIndex: async () => IndexDb.openLevel(level) })
  const rng = new Rng(0xb0)
  const want = Buffer.alloc(SIZE)
  for (let i = 0; i < 3000; i++) {
    const block = rng.int(SIZE / B)
    const data = rng.bytes(B)
    data.copy(want, block * B)
    await store.write(block * B, data)
  }
  writes.length = 0
  reads.length = 0
  await store.checkpoint()
  t.equal(store.status().index.pendingBlocks, 0, 'the checkpoint took every version')
  // 3000 entries: 3000 summaries and up to 3000 history records.
  t.ok(writes.length >= Math.floor(3000 / COMMIT_CHUNK_OPS), `written in ${writes.length} LevelDB writes`)
  t.ok(Math.max(...writes) <= COMMIT_CHUNK_OPS + 8, `the largest write holds ${Math.max(...writes)} operations`)
  t.equal(reads.length, 0, 'records of entries after the last checkpoint are written without a read')
  // Compaction frees the versions rewritten since (history.keep 0): each free reads its record.
  for (let i = 0; i < 3000; i++) {
    const block = rng.int(SIZE / B)
    const data = rng.bytes(B)
    data.copy(want, block * B)
    await store.write(block * B, data)
  }
  await store.checkpoint()
  writes.length = 0
  reads.length = 0
  const report = await store.compact()
  t.ok(report.versionsFreed > 0, `compaction freed ${report.versionsFreed} versions`)
  await store.checkpoint()
  t.ok(reads.length > 0 && Math.max(...reads) <= READ_MANY, `the largest read asks for ${Math.max(...reads)} records (${reads.length} reads)`)
  t.ok(Math.max(...writes) <= COMMIT_CHUNK_OPS + 8, `the largest write holds ${Math.max(...writes)} operations`)
  t.same(await store.read(0, SIZE), want, 'every block reads back')
  const v = await store.verify()
  t.ok(v.ok, v.problems.join('; '))
  await store.close()
})

t.test('writers wait for a checkpoint in flight once 4 x checkpointMaxBlocks versions wait', async t => {
  const dir = tmpDir(t)
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: 4 * 1024 * 1024 })
  let hold: Promise<void> | undefined
  let release = (): void => {}
  const gate = async (label: string): Promise<void> => { if (label === 'index.commit' && hold) await hold }
  const store = await Store.open(dir, {
    checkpointIntervalMs: 0,
    checkpointMaxBlocks: 16,
    openIndex: async () => IndexDb.openLevel(new MemoryLevel({ keyEncoding: 'buffer', valueEncoding: 'buffer' }) as unknown as LevelDb, gate)
  })
  hold = new Promise(resolve => { release = resolve })
  // 16 blocks start a checkpoint, which stops at its LevelDB write.
  await store.write(0, Buffer.alloc(16 * B, 1))
  // One writer, one write at a time (a group commit takes what waits at once: the bound is
  // checked before each group's writev).
  let done = 0
  const writer = (async () => {
    for (let i = 0; i < 100; i++) {
      await store.write((16 + i) * B, Buffer.alloc(B, 2 + i % 200))
      done++
    }
  })()
  // Until the writer stops making progress (real file I/O: wall time, not ticks).
  for (let last = -1; last !== done;) {
    last = done
    await new Promise(resolve => setTimeout(resolve, 300))
  }
  t.ok(done >= 4 * 16 - 1 && done < 100, `${done} of 100 writes went through while the checkpoint was held`)
  t.ok(store.status().index.pendingBlocks <= 4 * 16 + 1, `the batch stayed bounded (${store.status().index.pendingBlocks} versions)`)
  release()
  hold = undefined
  await writer
  const got = await store.read(16 * B, 100 * B)
  for (let i = 0; i < 100; i++) t.equal(got[i * B], 2 + i % 200, `block ${16 + i}`)
  await store.close()
})
