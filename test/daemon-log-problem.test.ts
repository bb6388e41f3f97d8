// The CLI's errors about a daemon that did not do what it was asked name what the daemon
// logged (lastDaemonProblem, src/daemon/paths.ts): the last warning or error since the ask.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { lastDaemonProblem } from '../src/daemon/paths'

t.test('the last warning or error since a time, with its err; nothing older, nothing quieter', async t => {
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
  t.equal(lastDaemonProblem(log, 2000), 'unmount refused: BUSY: /mnt is busy: current.img is open', 'the warning after the ask, with its err')
  t.equal(lastDaemonProblem(log, 2150), undefined, 'none since a later time (the old error is not reported)')
  t.equal(lastDaemonProblem(log, 0), 'unmount refused: BUSY: /mnt is busy: current.img is open', 'the newest one when there are several')
  fs.appendFileSync(log, line(50, 2300, 'the stop did not finish within 30 s; exiting now') + '\n')
  t.equal(lastDaemonProblem(log, 2000), 'the stop did not finish within 30 s; exiting now', 'a message without err')
  t.equal(lastDaemonProblem(path.join(dir, 'missing.log'), 0), undefined, 'no log: nothing')
})
