// JSON everywhere: walks the command list (the commander program the CLI runs) and checks that
// every command takes --json, that its output parses (a scenario runs each command for real:
// create, mount, attach, ..., receive, adopt) and that an error under --json is
// {"error":{"code","message"}} on stderr with exit 1, for every command.
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import type { Command } from 'commander'
import { CLI, canMount, cleanup, logdisk, must, tmpDir, type Run } from './helpers/cli'

// The built CLI's program (make build first), as the command line runs it.
const { buildProgram } = require(CLI) as { buildProgram: () => Command }

t.setTimeout(600_000)

/** Every command that runs something (leaves of the tree), by its full name ("pool add"). */
function leaves (cmd: Command, prefix = ''): Array<{ name: string, cmd: Command }> {
  return cmd.commands.flatMap(c => {
    const name = `${prefix}${c.name()}`
    return c.commands.length > 0 ? leaves(c, `${name} `) : [{ name, cmd: c }]
  })
}

const all = leaves(buildProgram())

t.test('every command takes --json', async t => {
  t.ok(all.length >= 30, `${all.length} commands`)
  for (const { name, cmd } of all) t.ok(cmd.options.some(o => o.long === '--json'), `${name} --json`)
})

function errorOf (t: Test, what: string, r: Run): { code: string, message: string } | undefined {
  t.equal(r.code, 1, `${what}: exit 1 (${r.stderr.trim().slice(0, 200)})`)
  t.equal(r.stdout, '', `${what}: nothing on stdout`)
  try {
    const lines = r.stderr.trim().split('\n')
    const e = JSON.parse(lines[lines.length - 1])
    t.same(Object.keys(e), ['error'], `${what}: {"error": ...}`)
    t.type(e.error.code, 'string', `${what}: error.code`)
    t.type(e.error.message, 'string', `${what}: error.message`)
    for (const l of lines) JSON.parse(l) // warnings are JSON lines too
    return e.error
  } catch (err) {
    t.fail(`${what}: stderr is not JSON: ${r.stderr} (${(err as Error).message})`)
    return undefined
  }
}

t.test('errors under --json: {"error":{"code","message"}} on stderr, exit 1, for every command', async t => {
  const dir = tmpDir('json-errors')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const missing = path.join(dir, 'no-store')
  for (const { name, cmd } of all) {
    // Arguments made up from the command's own declaration: a store that does not exist, 'x' for the rest.
    const args = [...name.split(' ')]
    for (const a of cmd.registeredArguments) {
      const n = a.name()
      const v = n === 'store' || n === 'mountpoint' ? missing : n === 'device' ? '/dev/not-a-loop' : n === 'assignments' ? 'no.such.key=1' : 'x'
      args.push(v)
    }
    for (const o of cmd.options) if (o.mandatory && o.long) args.push(o.long, o.long === '--size' ? '1G' : o.long === '--in' || o.long === '--out' ? path.join(dir, 'f') : 'x')
    if (name === 'create') args[1] = path.join(dir, 'plain-file', 'store')
    fs.writeFileSync(path.join(dir, 'plain-file'), '')
    args.push('--json')
    const r = await logdisk(...args)
    const e = errorOf(t, args.join(' '), r)
    if (e) t.notMatch(e.message, /^logdisk: /, `${name}: the message alone`)
  }
  // Usage errors too.
  const usage = errorOf(t, 'unknown option', await logdisk('status', missing, '--bogus', '--json'))
  t.equal(usage?.code, 'USAGE')
  const plain = await logdisk('status', missing)
  t.match(plain.stderr, /^logdisk: no store at /, 'without --json: the one text line')
})

t.test('the output of every command under --json parses', { skip: canMount() }, async t => {
  const dir = tmpDir('json')
  t.teardown(() => cleanup(dir, t))
  const S = path.join(dir, 'store')
  const S2 = path.join(dir, 'store2')
  const M = path.join(dir, 'mnt')
  const ran = new Set<string>()
  const json = async (name: string, ...args: string[]): Promise<any> => {
    const r = await logdisk(...name.split(' '), ...args, '--json')
    t.equal(r.code, 0, `${name}: ${r.stderr}`)
    ran.add(name)
    try {
      return JSON.parse(r.stdout)
    } catch {
      t.fail(`${name} --json printed no JSON: ${r.stdout}`)
      return {}
    }
  }

  t.equal((await json('create', S, '--size', '64M', '--segment-size', '4M')).dir, S)
  t.ok((await json('policy show', S))['history.keep'] !== undefined)
  fs.mkdirSync(path.join(dir, 'archive'))
  const set = await json('policy set', S, `archive.target=${path.join(dir, 'archive')}`)
  t.equal(set.set['archive.target'], path.join(dir, 'archive'))
  t.equal((await json('status', S)).dir, S)
  const mounted = await json('mount', S, M)
  t.equal(mounted.mountpoint, M)
  t.type(mounted.pid, 'number')
  const fd = fs.openSync(path.join(M, 'current.img'), 'r+')
  fs.writeSync(fd, Buffer.alloc(4 << 20, 0xab), 0, 4 << 20, 0)
  fs.closeSync(fd)
  const att = await json('attach', M)
  t.match(att.device, /^\/dev\/loop\d+$/)
  t.equal((await json('detach', att.device)).device, att.device)
  await new Promise(resolve => setTimeout(resolve, 300))
  const sync = await json('sync', S, '--note', 'n1')
  t.type(sync.id, 'number')
  t.equal((await json('snapshot', S, '--name', 'a')).name, 'a')
  const fd2 = fs.openSync(path.join(M, 'current.img'), 'r+')
  fs.writeSync(fd2, Buffer.alloc(1 << 20, 0xcd), 0, 1 << 20, 8 << 20)
  fs.closeSync(fd2)
  t.equal((await json('snapshot', S, '--name', 'b')).name, 'b')
  t.equal((await json('snapshots', S)).length, 2)
  t.ok(Array.isArray(await json('log', S)))
  t.ok((await json('diff', S, 'a', 'b')).blocks > 0)
  t.equal((await json('unmount', M)).mountpoint, M)
  t.equal((await json('resize', S, '--size', '+64M')).toBytes, 128 * 1024 * 1024)
  t.type((await json('compact', S)).versionsFreed, 'number')
  t.type((await json('archive', S)).archived, 'number')
  t.equal((await json('restore', S, '--at', 'a', '--out', path.join(dir, 'a.img'))).out, path.join(dir, 'a.img'))
  t.equal((await json('export', S, 'a', '--out', path.join(dir, 'a-export.img'))).snapshot, 'a')
  t.equal((await json('send', S, 'a', '--out', path.join(dir, 'a.stream'))).snapshot, 'a')
  t.equal((await json('receive', S2, '--in', path.join(dir, 'a.stream'))).created, true)
  t.ok(Array.isArray((await json('pool list', S)).volumes))
  const vol = path.join(dir, 'vol')
  t.equal((await json('pool add', S, vol, '--capacity', '1G')).dir, vol)
  t.type((await json('pool remove', S, vol)).moved, 'number')
  t.type((await json('pool repair', S)).copies, 'number')
  t.equal((await json('verify', S)).ok, true)
  t.equal((await json('criteria create', S, 'c', '--target', path.join(dir, '{snapshot}-c.img'))).name, 'c')
  t.equal((await json('criteria show', S, 'c')).name, 'c')
  t.equal((await json('criteria list', S)).length, 1)
  t.ok(await json('criteria copy', S, 'c', 'b'))
  t.equal((await json('criteria delete', S, 'c')).deleted, 'c')
  t.type((await json('adopt', S2)).to, 'string')
  const C = path.join(dir, 'clone')
  t.equal((await json('clone', S, 'b', C)).clone, C)
  t.type((await json('promote', C)).blocks, 'number')
  const R = path.join(dir, 'replica')
  fs.mkdirSync(R)
  await json('policy set', S2, `replicate.target=${R}`)
  await json('mount', S2, M)
  let shipped = false
  for (let i = 0; i < 300 && !shipped; i++) {
    shipped = fs.readdirSync(R, { recursive: true }).some(f => String(f).includes('manifest'))
    if (!shipped) await new Promise(resolve => setTimeout(resolve, 100))
  }
  await json('unmount', M)
  t.equal((await json('create', path.join(dir, 'recovered'), '--from', R)).dir, path.join(dir, 'recovered'))
  t.equal((await json('delete', S, 'b')).name, 'b')
  // Each row keeps its own seq (a delete marker's payload has the snapshot's), and the compaction's moves are named.
  const rows = await json('log', S) as Array<{ seq: number, kind: string, payload?: { seq?: number } }>
  t.equal(new Set(rows.map(r => r.seq)).size, rows.length, 'log --json: every seq once')
  const del = rows.find(r => r.kind === 'delete')
  t.ok(del && del.payload?.seq !== undefined && del.payload.seq !== del.seq, 'a delete row: its seq, and the snapshot\'s in its payload')
  t.notOk(rows.some(r => /^\d+$/.test(r.kind)), 'no kind shown as a bare number')
  t.equal((await json('completion', 'bash')).shell, 'bash')

  t.same(all.map(c => c.name).filter(n => !ran.has(n)), [], 'every command ran with --json in this scenario')
  await must('true')
})
