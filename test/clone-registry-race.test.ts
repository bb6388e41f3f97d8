// Two writers of one parent's clones.json (two `clone` commands, or a clone opened for writing
// while another is made) each read it, added their entry and renamed their file over the
// other's: one clone dropped out, and the parent let the snapshot it reads be deleted
// (helper-84, with strace delaying one rename). Now the read-modify-write holds the parent's
// clones.json.lock (O_EXCL, naming its pid): the second writer waits, or is refused in one line.
import fs from 'node:fs'
import path from 'node:path'
import crypto from 'node:crypto'
import { spawnSync } from 'node:child_process'
import t from 'tap'
import * as clone from '../src/clone/clone'
import { CLI, run, tmpDir } from './helpers/cli'

t.setTimeout(120_000)
const DIST_CLONE = path.resolve('dist/src/clone/clone.js')
const entries = (parent: string): string[] => JSON.parse(fs.readFileSync(path.join(parent, 'clones.json'), 'utf8')).clones.map((c: { dir: string }) => c.dir).sort()

/** registerClone in another process, with a short wait for the lock; its outcome as 'ok' or the error's code. */
function registerElsewhere (parent: string, dir: string): string {
  const script = `const m = require(${JSON.stringify(DIST_CLONE)}); if (m.clonesLock) m.clonesLock.waitMs = 300
try { m.registerClone(${JSON.stringify(parent)}, ${JSON.stringify(dir)}, ${JSON.stringify(crypto.randomUUID())}, 's0'); console.log('ok') } catch (e) { console.log(e.code); console.error(e.message) }`
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 })
  return `${r.stdout.trim()}${r.stderr.trim() === '' ? '' : ': ' + r.stderr.trim()}`
}

t.test('a second writer of clones.json, run between the first one\'s read and its write, loses no entry', async t => {
  const root = tmpDir('clone-registry-race')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const P = path.join(root, 'P')
  const r = await run(process.execPath, [CLI, 'create', P, '--size', '16M', '--segment-size', '2M'])
  t.equal(r.code, 0, r.stderr)
  const A = path.join(root, 'ca')
  const B = path.join(root, 'cb')

  // The first writer (this process) is stopped at its rename of clones.json, after its read;
  // the second (another process) runs to its end there.
  const rename = fs.renameSync
  let second = ''
  fs.renameSync = ((from: fs.PathLike, to: fs.PathLike) => {
    if (second === '' && String(to) === path.join(P, 'clones.json')) second = registerElsewhere(P, B)
    return rename(from, to)
  }) as typeof fs.renameSync
  try {
    clone.registerClone(P, A, crypto.randomUUID(), 's0')
  } finally {
    fs.renameSync = rename
  }
  t.not(second, '', 'the second writer ran inside the first one\'s read-modify-write')
  if (second.startsWith('ok')) t.same(entries(P), [A, B].sort(), 'both entries are kept')
  else {
    t.match(second, new RegExp(`^BUSY: ${P}'s clones.json is being changed by process ${process.pid} on \\S+ \\(its lock ${P}/clones.json.lock is held\\); try again`), 'the second writer waited for the lock and was refused in one line')
    t.same(entries(P), [A], 'the first writer\'s entry is there')
    t.equal(registerElsewhere(P, B), 'ok', 'the second writer, run again, gets the lock')
    t.same(entries(P), [A, B].sort(), 'and both entries are kept')
  }
  t.notOk(fs.existsSync(path.join(P, 'clones.json.lock')), 'the lock is released')

  // A lock left by a process that died (kill -9 while it held it) is taken over at once.
  const dead = spawnSync(process.execPath, ['-e', '0']).pid
  fs.writeFileSync(path.join(P, 'clones.json.lock'), `${dead} ${(await import('node:os')).hostname()}\n`)
  const C = path.join(root, 'cc')
  t.equal(registerElsewhere(P, C), 'ok', 'a dead holder\'s lock is taken over')
  t.same(entries(P), [A, B, C].sort())
  t.notOk(fs.existsSync(path.join(P, 'clones.json.lock')), 'and released')
})
