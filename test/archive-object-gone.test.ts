import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { canMount, cleanup, daemonLog, logdisk, must, run, tmpDir } from './helpers/cli'

/**
 * A read of current.img whose data is in an archived segment whose object is gone from the
 * target (an older copy of the archive directory put back) failed with ENOENT, and the daemon
 * logged nothing (found by a hostile test, 2026-12-06): read(2) of a file that exists must
 * fail with EIO, logged as every other read error is.
 */
const skip = canMount()
const MIB = 1024 * 1024

t.test('a read whose archived object is gone fails with EIO, logged', { skip, timeout: 180_000 }, async t => {
  const dir = tmpDir('archive-object-gone')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 's'); const archive = path.join(dir, 'arch'); const mnt = path.join(dir, 'm')
  fs.mkdirSync(archive); fs.mkdirSync(mnt)
  const cli = path.resolve('dist/src/cli/main.js')
  await must(process.execPath, cli, 'create', store, '--size', '64M', '--segment-size', '4M')
  await must(process.execPath, cli, 'policy', 'set', store, `archive.target=${archive}`)
  {
    const { store: s } = await openStore(store)
    try { await s.write(0, crypto.randomBytes(12 * MIB)); await s.flush(); await s.archive({ workingSet: 1 }) } finally { await s.close() }
  }
  const objects = fs.readdirSync(archive, { recursive: true }).map(String).filter(f => /seg-0+1\b/.test(f) && !fs.statSync(path.join(archive, f)).isDirectory())
  t.ok(objects.length > 0, `segment 1 is archived (${objects.join(', ')})`)
  for (const f of objects) fs.renameSync(path.join(archive, f), path.join(dir, path.basename(f)))
  fs.rmSync(path.join(store, 'cache'), { recursive: true, force: true })

  t.equal((await logdisk('mount', store, mnt)).code, 0, 'mounted')
  // Segment 1 holds bytes 4-8 MiB of the image (segment 0 the first ~4 MiB).
  const dd = await run('dd', [`if=${path.join(mnt, 'current.img')}`, 'of=/dev/null', 'bs=1M', 'count=12', 'iflag=direct'])
  t.not(dd.code, 0, 'the read fails')
  t.match(dd.stderr, /Input\/output error/, `with EIO: ${dd.stderr.trim()}`)
  t.notMatch(dd.stderr, /No such file or directory/, 'not ENOENT')
  t.match(await daemonLog(store, /I\/O error returned to the kernel/), /I\/O error returned to the kernel/, 'and the daemon logs it')
  t.equal((await logdisk('unmount', mnt)).code, 0, 'unmounts')
})
