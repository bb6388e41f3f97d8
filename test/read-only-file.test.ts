// A segment file on a filesystem gone read-only (a pool volume remounted ro) opens for reading
// only; a write to it failed with "EBADF: bad file descriptor", which is how `mount` of a store
// whose newest segment sat there failed (found by a hostile test, helper-42). It says what it is.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { isLogdiskError } from '../src/errors'
import { nodeFileLayer } from '../src/store/file-layer'

t.test('a write to a file on a read-only filesystem: READ_ONLY, saying so', { skip: process.getuid?.() === 0 ? false : 'needs root (a read-only bind mount)' }, async t => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-ro-file-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'seg-000000000000.log')
  fs.writeFileSync(file, Buffer.alloc(8192, 1))
  execFileSync('mount', ['--bind', dir, dir])
  t.teardown(() => { try { execFileSync('umount', ['-l', dir]) } catch { /* not mounted */ } })
  execFileSync('mount', ['-o', 'remount,bind,ro', dir])
  const h = await nodeFileLayer.open(file, false)
  t.teardown(() => h.close())
  const got = Buffer.alloc(4096)
  t.equal(await h.read(got, 0, 4096, 0), 4096, 'it still reads')
  for (const [what, op] of [['writev', () => h.writev([Buffer.alloc(4096)], 0)], ['writevNow', async () => h.writevNow!([Buffer.alloc(4096)], 0)], ['truncate', () => h.truncate(0)]] as const) {
    let err: unknown
    try { await op() } catch (e) { err = e }
    t.ok(isLogdiskError(err, 'READ_ONLY'), `${what}: READ_ONLY`, { got: String(err) })
    t.match((err as Error).message, new RegExp(`^write ${file}: its filesystem is read-only; make it writable again`), `${what}: says so`)
  }
  t.equal(fs.statSync(file).size, 8192, 'nothing changed')
})
