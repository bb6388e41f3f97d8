// Segments and index on one filesystem (helper-97 D3): the log's appends took the room the
// index needed. Its new segments filled the filesystem to its last byte; an index write then
// failed for room, the write guard refused index writes until 16 MiB were free, compaction
// (which needs index writes) freed nothing, and after a kill -9 the store could not even be
// opened ("cannot open the index ... 000017.ldb: No space left on device"). A new segment is
// now refused (NO_SPACE, ENOSPC at the FUSE edge) before the filesystem falls under the
// index's reserve (headroom.ts INDEX_RESERVE_BYTES), and an open that fails for room says so.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { Store } from '../src/store/store'
import { IndexDb } from '../src/store/index-db'
import { ROOM_FOR_FLUSH } from '../src/store/index-write-guard'
import { isLogdiskError } from '../src/errors'
import { run } from './helpers/cli'
import { smallTmpfs } from './helpers/tmpfs'

const skip = process.getuid?.() !== 0 ? 'needs root (mounts a tmpfs)' : false
const MiB = 1024 * 1024
const freeOn = (dir: string): number => { const st = fs.statfsSync(dir); return st.bavail * st.bsize }

t.test('the log leaves the index its reserve on a filesystem they share', { skip, timeout: 300_000 }, async t => {
  const disk = await smallTmpfs(t, 'index-reserve', '48m')
  const storeDir = path.join(disk, 'store')
  await Store.create(storeDir, { sizeBytes: 16 * MiB, segmentBytes: 2 * MiB })
  let store = await Store.open(storeDir, { checkpointIntervalMs: 50, historyKeepMs: 0 })
  let closed = false
  t.teardown(async () => { if (!closed) await store.close().catch(() => undefined) })

  // Overwrites, never compacted: the log grows until the filesystem (or its reserve) stops it.
  let noSpace = 0
  let otherErrors = 0
  let lowest = freeOn(disk)
  for (let i = 0; i < 700 && noSpace < 20; i++) {
    try {
      await store.write(Math.floor(Math.random() * 256) * 64 * 1024, crypto.randomBytes(64 * 1024))
      await store.flush()
    } catch (err) {
      if (isLogdiskError(err, 'NO_SPACE')) noSpace++
      else otherErrors++
    }
    lowest = Math.min(lowest, freeOn(disk))
  }
  t.ok(noSpace > 0, `writes were refused for room (${noSpace})`)
  t.equal(otherErrors, 0, 'no other errors')
  t.ok(lowest >= ROOM_FOR_FLUSH, `the filesystem kept the index's reserve: ${(lowest / MiB).toFixed(1)} MiB free at the least`)

  // Compaction commits to the index and frees room; writes go on.
  await store.compact()
  let after = 0
  for (let i = 0; i < 20; i++) {
    try { await store.write(i * 64 * 1024, crypto.randomBytes(64 * 1024)); await store.flush(); after++ } catch { /* still full */ }
  }
  t.ok(after > 0, `writes succeed again after a compaction (${after} of 20)`)
  await store.close()
  closed = true
  store = await Store.open(storeDir, { checkpointIntervalMs: 50, historyKeepMs: 0 })
  await store.close()

  // An open that fails for room says so, in one line.
  const filler = path.join(disk, 'filler')
  await run('dd', ['if=/dev/zero', `of=${filler}`, 'bs=64k', 'status=none'])
  await run('dd', ['if=/dev/zero', `of=${filler}2`, 'bs=4k', 'status=none'])
  const err = await IndexDb.open(path.join(storeDir, 'index')).then(async db => { await db.close(); return undefined }, (e: Error) => e)
  fs.rmSync(filler)
  fs.rmSync(`${filler}2`)
  if (err !== undefined) {
    t.ok(isLogdiskError(err, 'NO_SPACE'), `NO_SPACE: ${err.message}`)
    t.match(err.message, /^cannot open the index at .*: no room on its filesystem \(.* free of .*\), .*free at least \d/)
    t.notMatch(err.message, /\n/, 'one line')
  } else {
    t.pass('the open needed no room (nothing to write)')
  }
})
