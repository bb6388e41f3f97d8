// The CLI's errors about a daemon that did not do what it was asked name what the daemon
// logged (firstDaemonProblem, src/daemon/paths.ts): the first warning or error since the ask
// (the cause; what follows it is its consequence).
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { firstDaemonProblem } from '../src/daemon/paths'

t.test('the first warning or error since a time, with its err; nothing older, nothing quieter', async t => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-log-problem-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const log = path.join(dir, 'daemon.log')
  const line = (level: number, time: number, msg: string, err?: string): string => JSON.stringify({ level, time, pid: 1, msg, ...(err ? { err } : {}) })
  fs.writeFileSync(log, [
    line(50, 1000, 'an old error'),
    line(30, 2000, 'asked to unmount'),
    line(40, 2100, 'unmount refused', 'BUSY: /mnt is busy: current.img is open'),
    line(30, 2200, 'serving on'),
    'not a JSON line',
    ''
  ].join('\n'))
  t.equal(firstDaemonProblem(log, 2000), 'unmount refused: BUSY: /mnt is busy: current.img is open', 'the warning after the ask, with its err')
  t.equal(firstDaemonProblem(log, 2150), undefined, 'none since a later time (the old error is not reported)')
  t.equal(firstDaemonProblem(log, 0), 'an old error', 'the oldest one when there are several')
  fs.appendFileSync(log, line(50, 2300, 'logdisk: exiting with the FUSE session at /mnt still open; killing the process so the kernel ends it') + '\n')
  t.equal(firstDaemonProblem(log, 2000), 'unmount refused: BUSY: /mnt is busy: current.img is open', 'the cause, not the consequence logged after it')
  t.equal(firstDaemonProblem(log, 2250), 'logdisk: exiting with the FUSE session at /mnt still open; killing the process so the kernel ends it', 'a message without err')
  t.equal(firstDaemonProblem(path.join(dir, 'missing.log'), 0), undefined, 'no log: nothing')
})
