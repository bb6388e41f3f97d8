// The store's own directory inside a pool volume (<volume>/<uuid>) turns read-only under a running
// daemon (a read-only bind mount over it here; root's chattr +i does the same) while the volume's
// directory stays writable. The pool's write probe tested <volume>, so the volume still counted as
// writable and every roll placed the next segment there again: creating it failed (EROFS) and 15 of
// 16 fsynced writes failed while another assigned volume had room, and pool list said nothing
// (helper-75's D1). Now the probe tests the store's directory there: new segments go to the other
// volume, and pool list shows the volume read-only with a warning.
// Real parts: a read-only bind mount, the /dev/fuse transport.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { canMount, cleanup, logdisk, must, tmpDir } from './helpers/cli'
import { readAt, writeAt } from './helpers/image-file'

const MiB = 1024 * 1024
const skip = canMount()

t.test('the store\'s directory on a volume turns read-only under a running daemon: writes go on on the other volume', { skip, timeout: 120_000 }, async t => {
  const dir = tmpDir('pool-store-dir-ro')
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  const a = path.join(dir, 'a')
  const b = path.join(dir, 'b')
  let bound = ''
  t.teardown(async () => {
    if (bound !== '') await must('umount', bound).catch(() => undefined)
    await cleanup(dir, t)
  })
  await must(process.execPath, path.resolve('dist/src/cli/main.js'), 'create', store, '--size', '16M', '--segment-size', '2M', '--pool', a, '--pool', b)
  t.equal((await logdisk('pool', 'add', store, b)).code, 0, 'b assigned too')
  t.equal((await logdisk('mount', store, mnt, '--transport', 'devfuse')).code, 0, 'mount')
  const own = fs.readdirSync(a).filter(n => !n.startsWith('.')).map(n => path.join(a, n)).find(p => fs.statSync(p).isDirectory())!
  await must('mount', '--bind', own, own)
  bound = own
  await must('mount', '-o', 'remount,ro,bind', own)
  const img = path.join(mnt, 'current.img')
  const data = crypto.randomBytes(8 * MiB)
  const failed: string[] = []
  for (let i = 0; i < 8; i++) {
    try { writeAt(img, i * MiB, data.subarray(i * MiB, (i + 1) * MiB)) } catch (err) { failed.push(`${i}: ${(err as NodeJS.ErrnoException).code}`) }
  }
  t.same(failed, [], 'no write fails while b has room')
  t.ok(readAt(img, 0, 8 * MiB).equals(data), 'every write reads back')
  const list = JSON.parse((await logdisk('pool', 'list', store, '--json')).stdout).volumes as Array<{ dir: string, segments: number }>
  t.ok((list.find(v => v.dir === b)?.segments ?? 0) >= 2, `new segments went to b: ${JSON.stringify(list.map(v => [v.dir, v.segments]))}`)
  const listed = await logdisk('pool', 'list', store)
  t.match(listed.stdout + listed.stderr, `pool volume ${a} is read-only`, `pool list warns: ${listed.stdout}${listed.stderr}`)
  t.equal((await logdisk('unmount', mnt)).code, 0, 'unmount')
})
