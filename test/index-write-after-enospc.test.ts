// A moment without room on the store's filesystem made the index lose later commits
// (helper-85): a LevelDB write that failed inside its log (ENOSPC) left a torn record there,
// LevelDB went on appending behind it, and the next open's log replay stopped at the torn
// record: every write acknowledged after it (synced ones too) was gone, silently. The store had
// acted on them (archived or recycled segments), so flushed data read as zeros or the open was
// refused. Writes after a failed one now wait for a flush of LevelDB's memtable into a table
// (index-write-guard.ts). Real LevelDB on a real full filesystem (a small tmpfs).
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { IndexDb } from '../src/store/index-db'
import { testKey, testRows } from './helpers/index-rows'
import { run } from './helpers/cli'
import { smallTmpfs } from './helpers/tmpfs'

const skip = process.getuid?.() !== 0 ? 'needs root (mounts a tmpfs)' : false
const key = testKey
const value = Buffer.alloc(3000, 0x61)

t.test('writes acknowledged after one failed for room survive a reopen', { skip, timeout: 120_000 }, async t => {
  const disk = await smallTmpfs(t, 'index-enospc', '40m')
  const location = path.join(disk, 'index')
  let db = await IndexDb.open(location)
  const before: string[] = []
  for (let i = 0; i < 20; i++) { await db.load([[key(`a${i}`), value]]); before.push(`a${i}`) }

  const filler = path.join(disk, 'filler')
  await run('dd', ['if=/dev/zero', `of=${filler}`, 'bs=64k', 'status=none'])
  await run('dd', ['if=/dev/zero', `of=${filler}2`, 'bs=4k', 'status=none'])
  let failed = 0
  for (let i = 0; i < 20; i++) await db.load([[key(`b${i}`), value]]).catch(() => { failed++ })
  t.ok(failed > 0, `${failed} of 20 writes failed while the filesystem was full`)
  fs.rmSync(filler)
  fs.rmSync(`${filler}2`)

  const after: string[] = []
  for (let i = 0; i < 40; i++) { await db.load([[key(`c${i}`), value]]); after.push(`c${i}`) }
  await db.close()

  db = await IndexDb.open(location)
  t.teardown(() => db.close())
  const missing: string[] = []
  for (const [k, v] of await testRows(db)) if (!v.equals(value)) missing.push(`${k} (changed)`)
  const have = new Set((await testRows(db)).map(([k]) => k))
  for (const k of [...before, ...after]) if (!have.has(k)) missing.push(k)
  t.same(missing, [], 'every write acknowledged before and after the failures reads back after a reopen')
})
