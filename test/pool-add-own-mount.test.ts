// `pool add STORE MOUNTPOINT` of the store's own mount sent the operation to the daemon, whose
// synchronous look at the directory went through its own FUSE mount: the daemon hung in
// fuse_lookup (state D), and with it the mount and every later command, until kill -9 (a
// hostile test, helper-62). It is refused first, with async stats only, as --out is.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { CLI, canMount, cleanup, logdisk, run, tmpDir } from './helpers/cli'

const skip = canMount()

t.test('pool add of a directory on the store\'s own mount is refused, and the daemon serves on', { skip, timeout: 120_000 }, async t => {
  const dir = tmpDir('pool-add-own-mount')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  t.equal((await logdisk('create', store, '--size', '16M', '--segment-size', '2M')).code, 0)
  t.equal((await logdisk('mount', store, mnt)).code, 0)
  for (const volume of [mnt, path.join(mnt, 'sub')]) {
    const r = await run(process.execPath, [CLI, 'pool', 'add', store, volume], { timeoutMs: 30_000 })
    t.equal(r.code, 1, `pool add ${volume}: refused, not hung`)
    t.equal(r.stderr, `logdisk: refusing to use ${volume} as a pool volume: it is on the mount at ${mnt}, which this store's daemon serves (its writes would wait on themselves); give a directory outside ${mnt}\n`, 'in one line')
  }
  const list = await run(process.execPath, [CLI, 'pool', 'list', store], { timeoutMs: 30_000 })
  t.equal(list.code, 0, 'the daemon still answers')
  t.ok(fs.statSync(path.join(mnt, 'current.img')).size > 0, 'and the mount still serves')
  t.equal((await logdisk('unmount', mnt)).code, 0, 'and unmounts')
})
