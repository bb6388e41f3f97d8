// A pool volume's marker lock left by a process killed while it held it (kill -9 inside a
// pool remove): the next change waited 30 s and failed meanwhile with "locked by another
// store" (found by a hostile test, helper-42). The lock names its holder now: one whose
// process is gone from this host is taken back at once; a live holder is named.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { isLogdiskError } from '../src/errors'
import { ensureMarker } from '../src/pool/volume-marker'

function volumeDir (t: { teardown: (fn: () => void) => void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-volume-lock-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

t.test('a lock whose holder died on this host is taken back at once', async t => {
  const dir = volumeDir(t)
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString()
  fs.writeFileSync(path.join(dir, '.logdisk-volume.lock'), `${dead} ${os.hostname()}\n`)
  const started = Date.now()
  const marker = ensureMarker(dir, 64 * 1024 * 1024)
  t.ok(Date.now() - started < 1000, `in ${Date.now() - started} ms`)
  t.equal(marker.capacityBytes, 64 * 1024 * 1024, 'the marker was written')
  t.notOk(fs.existsSync(path.join(dir, '.logdisk-volume.lock')), 'and the lock released')
})

t.test('a lock held by a live process: BUSY after the wait, naming it', async t => {
  const dir = volumeDir(t)
  fs.writeFileSync(path.join(dir, '.logdisk-volume.lock'), `${process.pid} ${os.hostname()}\n`)
  let err: unknown
  try { ensureMarker(dir, null) } catch (e) { err = e }
  t.ok(isLogdiskError(err, 'BUSY'), 'BUSY')
  t.match((err as Error).message, new RegExp(`^pool volume ${dir} is locked by process ${process.pid} on ${os.hostname()}, which is changing its marker .*; try again`))
  t.ok(fs.existsSync(path.join(dir, '.logdisk-volume.lock')), 'the live holder\'s lock stays')
})
