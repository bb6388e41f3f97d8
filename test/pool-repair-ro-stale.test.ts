// A stale copy (one the index does not name: it fell behind after a failed write, or a crash
// left it behind a move) on a volume whose filesystem went read-only: pool repair made every
// copy it had to, then failed (exit 1) on removing that stale copy (known defect D7). It now
// says so in a warning line and succeeds; once the volume is writable, the next repair
// removes the copy.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { canMount, cleanup, logdisk, must, tmpDir } from './helpers/cli'

const MiB = 1024 * 1024
const skip = canMount()

t.test('pool repair with a stale copy on a read-only volume warns and succeeds', { skip, timeout: 120_000 }, async t => {
  const dir = tmpDir('pool-repair-ro-stale')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const a = path.join(dir, 'a')
  const b = path.join(dir, 'b')
  fs.mkdirSync(b)
  await must('mount', '-t', 'tmpfs', '-o', 'size=32M', 'tmpfs', b)
  t.equal((await logdisk('create', store, '--size', '64M', '--segment-size', '2M', '--pool', a, '--pool', b)).code, 0)
  const data = crypto.randomBytes(6 * MiB)
  {
    const { store: s } = await openStore(store)
    try { await s.write(0, data); await s.flush() } finally { await s.close() }
  }
  const uuid = JSON.parse(fs.readFileSync(path.join(store, 'store.json'), 'utf8')).uuid as string
  // A sealed segment on a, copied to b where the index does not name it: a stale copy.
  const onA = fs.readdirSync(path.join(a, uuid)).filter(n => /^seg-\d+\.log$/.test(n)).sort()
  const sealed = onA.find(n => !fs.existsSync(path.join(b, uuid, n)) && n !== onA[onA.length - 1])
  t.ok(sealed, `a sealed segment on the first volume: ${sealed}`)
  fs.mkdirSync(path.join(b, uuid), { recursive: true })
  fs.copyFileSync(path.join(a, uuid, sealed!), path.join(b, uuid, sealed!))
  await must('mount', '-o', 'remount,ro', b)

  const repair = await logdisk('pool', 'repair', store)
  t.equal(repair.code, 0, `pool repair succeeds: ${repair.stderr}`)
  t.match(repair.stderr, new RegExp(`^logdisk: warning: 1 stale copy the index does not name could not be removed: ${path.join(b, uuid, sealed!)} \\(read-only\\); the next pool repair removes it once the volume is writable\\n$`), 'and says which stale copy stayed, in one line')
  t.ok(fs.existsSync(path.join(b, uuid, sealed!)), 'the stale copy is still there')

  await must('mount', '-o', 'remount,rw', b)
  const again = await logdisk('pool', 'repair', store)
  t.equal(again.code, 0, again.stderr)
  t.notOk(fs.existsSync(path.join(b, uuid, sealed!)), 'writable again: the next repair removed it')
  const verify = await logdisk('verify', store)
  t.equal(verify.code, 0, `verify is clean: ${verify.stdout}${verify.stderr}`)
})
