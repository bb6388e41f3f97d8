// Progress of long commands: on a terminal (a pseudo terminal from `script -q -c`) each of
// restore, export, send, receive, compact, archive, verify and pool remove (a drain) draws a bar
// with bytes (or counts), a rate and an ETA on stderr; piped, the same commands print only their
// result, and nothing on stderr. Also through the mount daemon (progress polled over the socket).
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { CLI, canMount, cleanup, logdisk, must, run, tmpDir } from './helpers/cli'

t.setTimeout(600_000)
const skip = canMount() || (fs.existsSync('/usr/bin/script') ? false : 'needs script(1) (util-linux)')

const shellQuote = (a: string): string => `'${a.replace(/'/g, "'\\''")}'`

/** Runs logdisk in a pseudo terminal; returns everything the terminal showed, carriage returns as newlines. */
async function onTerminal (args: string[]): Promise<{ code: number, out: string }> {
  const cmd = [process.execPath, CLI, ...args].map(shellQuote).join(' ')
  const r = await run('script', ['-q', '-e', '-c', cmd, '/dev/null'], { timeoutMs: 300_000, env: { COLUMNS: '160', TERM: 'xterm' } })
  return { code: r.code, out: (r.stdout + r.stderr).replace(/\r/g, '\n') }
}

t.test('long commands: a bar with bytes, rate and ETA on a terminal; nothing but the result when piped', { skip }, async t => {
  const dir = tmpDir('progress')
  t.teardown(() => cleanup(dir, t))
  const S = path.join(dir, 'store')
  const M = path.join(dir, 'mnt')
  const V1 = path.join(dir, 'vol1')
  const V2 = path.join(dir, 'vol2')
  await must(process.execPath, CLI, 'create', S, '--size', '512M', '--segment-size', '4M', '--pool', V1)
  fs.mkdirSync(path.join(dir, 'archive'))
  await must(process.execPath, CLI, 'policy', 'set', S, 'history.keep=0', `archive.target=${path.join(dir, 'archive')}`, 'segments.workingSet=4')
  t.equal((await logdisk('mount', S, M)).code, 0)
  const img = path.join(M, 'current.img')
  await must('dd', 'if=/dev/urandom', `of=${img}`, 'bs=1M', 'count=96', 'oflag=direct', 'conv=notrunc', 'status=none')
  await must(process.execPath, CLI, 'snapshot', S, '--name', 'a')
  await must('dd', 'if=/dev/urandom', `of=${img}`, 'bs=1M', 'count=32', 'seek=64', 'oflag=direct', 'conv=notrunc', 'status=none')
  await must(process.execPath, CLI, 'snapshot', S, '--name', 'b')
  await must('dd', 'if=/dev/urandom', `of=${img}`, 'bs=1M', 'count=16', 'seek=64', 'oflag=direct', 'conv=notrunc', 'status=none')

  // Through the daemon: restore polls the daemon's progress op.
  const mountedRestore = path.join(dir, 'mounted-restore.img')
  const started = Date.now()
  const viaDaemon = await onTerminal(['restore', S, '--at', 'a', '--out', mountedRestore])
  const took = Date.now() - started
  t.equal(viaDaemon.code, 0, viaDaemon.out.slice(-300))
  t.match(viaDaemon.out, /restored snapshot a to /)
  if (took > 1500) t.match(viaDaemon.out, /restoring \[.*\] \d+% \| .*MiB\/.*MiB \| .*\/s \| ETA /, `a bar through the daemon (${took} ms)`)
  else t.comment(`the mounted restore took only ${took} ms: too short for a poll`)
  t.equal((await logdisk('unmount', M)).code, 0)

  const cases: Array<{ name: string, args: string[], label: string, result: RegExp, again?: () => void }> = [
    { name: 'restore', args: ['restore', S, '--at', 'a', '--out', path.join(dir, 'r.img')], label: 'restoring', result: /^restored snapshot a to /, again: () => fs.rmSync(path.join(dir, 'r.img')) },
    { name: 'export', args: ['export', S, 'b', '--out', path.join(dir, 'e.img')], label: 'exporting', result: /^exported snapshot b to /, again: () => fs.rmSync(path.join(dir, 'e.img')) },
    { name: 'send', args: ['send', S, 'a', '--out', path.join(dir, 'a.stream')], label: 'sending', result: /^sent /, again: () => fs.rmSync(path.join(dir, 'a.stream')) },
    { name: 'receive', args: ['receive', path.join(dir, 'copy'), '--in', path.join(dir, 'a.stream')], label: 'receiving', result: /^received snapshot a /, again: () => fs.rmSync(path.join(dir, 'copy'), { recursive: true }) },
    { name: 'verify', args: ['verify', S], label: 'verifying', result: /^\d+ segments, \d+ entries, \d+ blocks checked\nok$/ },
    { name: 'compact', args: ['compact', S], label: 'compacting', result: /^freed \d+ block versions/ },
    { name: 'archive', args: ['archive', S], label: 'archiving', result: /^archived \d+ segment\(s\)/ },
    { name: 'pool remove', args: ['pool', 'remove', S, V1], label: 'draining', result: /^removed .*vol1 \(\d+ segment\(s\) moved\)$/ }
  ]
  await must(process.execPath, CLI, 'pool', 'add', S, V2, '--capacity', '10G')
  for (const c of cases) {
    if (c.name === 'pool remove') {
      // The drain needs segments on V1 (archive took some away): count them first.
      t.ok(fs.readdirSync(path.join(V1, fs.readdirSync(V1).find(f => /^[0-9a-f-]{36}$/.test(f))!)).length > 0, 'segments on the volume to drain')
    }
    const tty = await onTerminal(c.args)
    t.equal(tty.code, 0, `${c.name} on a terminal: ${tty.out.slice(-300)}`)
    t.match(tty.out, new RegExp(`${c.label} \\[[^\\]]*\\] \\d+% \\| [\\d.]+ (B|KiB|MiB|GiB)/[\\d.]+ (B|KiB|MiB|GiB) \\| [\\d.]+ (B|KiB|MiB|GiB)/s \\| ETA \\S+`), `${c.name}: a bar with bytes, rate and ETA`)
    t.match(tty.out, /100%/, `${c.name}: the bar ends at 100%`)
    if (c.name === 'pool remove') break // drained: nothing left to drain piped (below, with a new volume)
    c.again?.()
    const piped = await logdisk(...c.args)
    t.equal(piped.code, 0, `${c.name} piped: ${piped.stderr}`)
    t.equal(piped.stderr, '', `${c.name} piped: nothing on stderr`)
    t.match(piped.stdout.trim(), c.result, `${c.name} piped: only the result`)
    t.notMatch(piped.stdout, new RegExp(c.label), `${c.name} piped: no bar`)
  }
  // The drain piped: add a volume, move everything there, then remove it.
  const V3 = path.join(dir, 'vol3')
  await must(process.execPath, CLI, 'pool', 'add', S, V3, '--capacity', '10G')
  const piped = await logdisk('pool', 'remove', S, V2)
  t.equal(piped.code, 0, piped.stderr)
  t.equal(piped.stderr, '', 'pool remove piped: nothing on stderr')
  t.match(piped.stdout.trim(), /^removed .*vol2 \(\d+ segment\(s\) moved\)$/)

  // --json on a terminal: no bar either (the output is for a program).
  const json = await onTerminal(['verify', S, '--json'])
  t.equal(json.code, 0)
  t.notMatch(json.out, /verifying \[/, '--json: no bar')
  t.equal(JSON.parse(json.out.trim()).ok, true)
})
