// A moment without room left LevelDB holding a background error for good (helper-97 D2): a
// table write (a memtable flush) that failed with ENOSPC is kept by LevelDB, and every later
// write failed with that same error naming the .ldb, however much room came back; the store's
// checkpoints and compaction stopped (its log grew without bound) and its close failed. The
// write guard now sees such an error (a probe write after its flush) and, with room again,
// closes and opens the database in place. Real LevelDB on a real full filesystem (a tmpfs).
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { IndexBatch, IndexDb } from '../src/store/index-db'
import { testKey, testRows } from './helpers/index-rows'
import { run } from './helpers/cli'
import { smallTmpfs } from './helpers/tmpfs'

const skip = process.getuid?.() !== 0 ? 'needs root (mounts a tmpfs)' : false
const key = testKey

t.test('a background error left by a moment without room clears once room is back', { skip, timeout: 180_000 }, async t => {
  const disk = await smallTmpfs(t, 'index-reopen-enospc', '40m')
  const location = path.join(disk, 'index')
  let db = await IndexDb.open(location)
  // Random values: LevelDB's tables (snappy) are then as big as its log.
  const acked = new Map<string, Buffer>()
  const errorsWhileFull: Array<{ code?: string, message: string }> = []
  const put = async (name: string): Promise<boolean> => {
    const value = crypto.randomBytes(64 * 1024)
    try {
      await db.load([[key(name), value]])
      acked.set(name, value)
      return true
    } catch (err) {
      errorsWhileFull.push(err as { code?: string, message: string })
      return false
    }
  }
  for (let i = 0; i < 58; i++) t.ok(await put(`a${i}`)) // 3.6 MiB: the memtable (4 MiB) is not full yet

  // Leave 2 MiB: the log takes the next writes, the table of the full memtable does not fit.
  const filler = path.join(disk, 'filler')
  await run('dd', ['if=/dev/zero', `of=${filler}`, 'bs=64k', 'status=none'])
  await run('dd', ['if=/dev/zero', `of=${filler}2`, 'bs=4k', 'status=none'])
  fs.truncateSync(filler, fs.statSync(filler).size - 2 * 1048576)
  let failed = 0
  for (let i = 0; i < 40; i++) if (!await put(`b${i}`)) failed++
  t.ok(failed > 0, `${failed} of 40 writes failed while the filesystem was (nearly) full`)
  // Said as the store's, in one line (helper-101 D2: the first was LevelDB's "IO error: <file>:
  // No space left on device", naming neither the store nor what to do).
  t.same(errorsWhileFull.filter(e => e.code !== 'NO_SPACE').map(e => e.message), [], 'every write while full fails NO_SPACE')
  t.match(errorsWhileFull[0]?.message ?? '', /^the index at .* could not be written: its filesystem is full \(.*\); free some space/, `the first says so: ${errorsWhileFull[0]?.message}`)
  fs.rmSync(filler)
  fs.rmSync(`${filler}2`)

  // The first write with room back is a checkpoint's commit, whose LevelDB batch is made before
  // the guard reopens the database: it was written into a closed batch ("Batch is not open",
  // helper-101 D1) and failed although room was back.
  const batch = new IndexBatch()
  for (let i = 0; i < 600; i++) batch.addBlock(i * 64, 1000 + i, i * 4096, i)
  batch.counters.set('reopen-test', 1)
  await db.commit(batch, { seq: 1599, position: 7, timeMs: 1 }, 64)
  t.same(await db.checkpoint(), { seq: 1599, position: 7, timeMs: 1 }, 'a commit across the reopen is written whole')

  // Room is back: writes succeed again (each failed with LevelDB's kept error before).
  const errors: string[] = []
  for (let i = 0; i < 40; i++) {
    const value = crypto.randomBytes(64 * 1024)
    try {
      await db.load([[key(`c${i}`), value]])
      acked.set(`c${i}`, value)
    } catch (err) {
      errors.push((err as Error).message)
    }
  }
  t.same(errors.slice(0, 3), [], 'every write with room back succeeds')
  // Reads go on through the reopened database.
  t.equal((await testRows(db)).length >= acked.size, true, 'the index reads after the reopen')
  await db.close()

  db = await IndexDb.open(location)
  t.teardown(() => db.close())
  const have = new Map(await testRows(db))
  const missing = [...acked].filter(([k, v]) => !(have.get(k)?.equals(v) ?? false)).map(([k]) => k)
  t.same(missing, [], 'every acknowledged write reads back after a reopen')
})
