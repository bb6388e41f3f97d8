// A `clone` killed after it made the new store and before it wrote clone.json left a plain
// empty store at the target, which mounted as an all-zero disk (helper-84). Now a clone is
// made in a directory beside the target and renamed into place last: a kill leaves no store
// at the target, an open of it says in one line what happened, and a `clone` again into it
// removes what was left (and the parent's entry for the clone that never was).
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { spawn } from 'node:child_process'
import t from 'tap'
import { openStore } from '../src/app/open'
import { CLI, run, tmpDir } from './helpers/cli'

t.setTimeout(300_000)
const MiB = 1024 * 1024
const cli = (...args: string[]) => run(process.execPath, [CLI, ...args], { timeoutMs: 120_000 })
async function ok (...args: string[]): Promise<string> {
  const r = await cli(...args)
  if (r.code !== 0) throw new Error(`logdisk ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`)
  return r.stdout
}

t.test('a clone killed between making its store and writing clone.json leaves no store at the target', async t => {
  const root = tmpDir('clone-interrupted')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const P = path.join(root, 'P')
  await ok('create', P, '--size', '16M', '--segment-size', '2M')
  const data = crypto.randomBytes(MiB)
  let seq: number
  {
    const { store } = await openStore(P)
    try { await store.write(0, data); seq = (await store.snapshot({ name: 'gold' })).seq } finally { await store.close() }
  }
  const C = path.join(root, 'C')
  const dist = path.join(path.dirname(CLI), '..')
  // The child makes the clone: its store is created whole, then the child stops (and is killed) before clone.json.
  const script = `
    const { Store } = require(${JSON.stringify(path.join(dist, 'store/store.js'))})
    const { makeClone } = require(${JSON.stringify(path.join(dist, 'clone/clone.js'))})
    const create = Store.create
    Store.create = async (...a) => { const c = await create.apply(Store, a); process.stdout.write('created\\n'); return new Promise(() => {}) }
    makeClone(${JSON.stringify(P)}, { name: 'gold', seq: ${seq} }, ${JSON.stringify(C)})`
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
  const exited = new Promise<void>(resolve => child.on('exit', () => resolve()))
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error('the child never created the store')) }, 60_000)
    child.stdout.on('data', (d: Buffer) => { if (d.toString().includes('created')) { clearTimeout(timer); resolve() } })
  })
  child.kill('SIGKILL')
  await exited

  t.notOk(fs.existsSync(path.join(C, 'store.json')), 'no store at the target (it was a plain empty store, read as zeros)')
  const sync = await cli('sync', C) // (as mount: a plain open for writing, without a mount to undo)
  t.equal(sync.code, 1, 'an open of the target for writing is refused')
  t.match(sync.stderr, new RegExp(`^logdisk: no store at ${C}: a logdisk clone into it was interrupted before it was finished \\(it left ${root}/\\.C\\.cloning-\\d+-[0-9a-f-]+, which nothing reads\\); run the clone again \\(it removes what was left\\) or remove that directory\\n$`), 'in one line saying what happened')
  const status = await cli('snapshots', C)
  t.equal(status.code, 1, 'and so is a read-only command')
  const del = await cli('delete', P, 'gold')
  t.equal(del.code, 1, 'the parent still refuses to delete gold (it cannot know the clone never was)')

  await ok('clone', P, 'gold', C)
  t.same(fs.readdirSync(root).filter(n => n.includes('.cloning-')), [], 'clone again removes what was left')
  const entries = JSON.parse(fs.readFileSync(path.join(P, 'clones.json'), 'utf8')).clones
  t.equal(entries.length, 1, 'and the parent\'s entry for the clone that never was')
  {
    const { store } = await openStore(C, {}, [], 'read')
    try { t.same(await store.read(0, MiB), data, 'the clone reads its parent\'s snapshot') } finally { await store.close() }
  }
  const del2 = await cli('delete', P, 'gold')
  t.equal(del2.code, 1)
  t.match(del2.stderr, new RegExp(`base of clone ${C}: promote`), 'the parent protects the new clone')
})
