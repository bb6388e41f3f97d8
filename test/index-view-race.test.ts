// A read-only open makes a private view of the store's LevelDB index (copies of its live log
// files, links to its tables). A command that writes may take the store's lock right after the
// view checked it and let LevelDB drop a file the view is about to copy: the read-only command
// then failed with "cannot make a private view of the index ...: ENOENT" (a hostile test,
// helper-58, right after a kill -9 while offline commands took turns). That is a store in use,
// which callers wait for and retry (STORE_LOCKED), not an I/O error.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { liveFiles, makeIndexView } from '../src/store/index-view'
import { isLogdiskError } from '../src/errors'
import { logdisk, tmpDir } from './helpers/cli'
import { openStore } from '../src/app/open'

t.test('a live index file gone while the view is made: the store is in use', { timeout: 60_000 }, async t => {
  const dir = tmpDir('index-view-race')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const store = path.join(dir, 's')
  t.equal((await logdisk('create', store, '--size', '16M')).code, 0)
  const { store: s } = await openStore(store) // LevelDB makes its files at the first open
  await s.write(0, Buffer.alloc(4096, 1))
  await s.close()
  const index = path.join(store, 'index')
  const live = liveFiles(index)
  const log = path.join(index, `${String(live.logNumber).padStart(6, '0')}.log`)
  t.ok(fs.existsSync(log), `the live log file ${path.basename(log)}`)
  // The file goes between the view's listing and its copy, as a LevelDB compaction in another
  // process that took the lock meanwhile would remove it.
  const copy = fs.copyFileSync
  fs.copyFileSync = (from: fs.PathLike, to: fs.PathLike, mode?: number) => {
    if (String(from) === log) fs.rmSync(log)
    return copy(from, to, mode)
  }
  let thrown: unknown
  try { makeIndexView(index, path.join(dir, 'view')) } catch (err) { thrown = err } finally { fs.copyFileSync = copy }
  t.ok(isLogdiskError(thrown, 'STORE_LOCKED'), `STORE_LOCKED, which callers wait for: ${(thrown as Error)?.message}`)
})
