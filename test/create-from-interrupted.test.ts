// `create --from` killed part way (found by a hostile test, helper-41): it left a directory
// without store.json that every command called "no store", and that a second `create --from`
// refused as not empty. Now the directory carries a mark until the store is whole: commands
// name the unfinished recovery, a second create --from starts over and gets the same store,
// and a create --from still running is waited for, not trampled.
import crypto from 'node:crypto'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { Replicator } from '../src/replicate'
import { PARTIAL_FILE } from '../src/replicate/partial'
import { parseTarget } from '../src/archive'
import { CLI, cleanup, logdisk, tmpDir } from './helpers/cli'
import { imageSha, labelledPattern, newReplicatedStore } from './helpers/replica-fixture'

t.setTimeout(300_000)

const MiB = 1024 * 1024

t.test('create --from killed part way: commands name it, a second create --from starts over and gets the whole store', async t => {
  const root = tmpDir('create-from-kill')
  t.teardown(() => cleanup(root))
  const replica = path.join(root, 'replica')
  fs.mkdirSync(replica)
  const store = await newReplicatedStore(path.join(root, 'a'), replica, { sizeBytes: 64 * MiB, segmentBytes: 2 * MiB }, ['replicate.indexEvery=0'])
  const r = await Replicator.start(store, parseTarget(replica), { spec: replica, timer: false })
  for (let i = 0; i < 6; i++) await store.write(i * 8 * MiB, labelledPattern('create-from-kill', i, 8 * MiB))
  await store.flush()
  for (let i = 0; i < 20 && (await r.status()).lagBytes > 0; i++) await r.tick()
  t.equal((await r.status()).state, 'caught-up', 'the replica holds the store')
  const want = await imageSha(store)
  await r.stop()
  await store.close()

  // Killed as soon as it has begun (its mark is there): the fetch of 48 MiB is not done.
  const dir = path.join(root, 'b')
  const child = spawn(process.execPath, [CLI, 'create', dir, '--from', replica], { stdio: 'ignore' })
  const exited = new Promise(resolve => child.on('exit', resolve))
  for (let i = 0; i < 2000 && !fs.existsSync(path.join(dir, PARTIAL_FILE)); i++) await new Promise(resolve => setTimeout(resolve, 2))
  child.kill('SIGKILL')
  await exited
  t.ok(fs.existsSync(path.join(dir, PARTIAL_FILE)), 'killed before it finished: the mark stays')

  for (const args of [['status', dir], ['verify', dir], ['mount', dir, path.join(root, 'mnt')], ['snapshot', dir, '--name', 'x']]) {
    const res = await logdisk(...args)
    t.not(res.code, 0, `${args[0]} refuses`)
    t.match(res.stderr, new RegExp(`^logdisk: ${dir} is an unfinished logdisk create --from ${replica} \\(pid ${child.pid} on .*stopped before it was done\\): run logdisk create ${dir} --from ${replica} again \\(it starts over\\), or remove the directory\\n$`), `${args[0]}: one line naming it and what to do`)
  }

  const again = await logdisk('create', dir, '--from', replica)
  t.equal(again.code, 0, `create --from again succeeds: ${again.stderr}`)
  t.match(again.stderr, new RegExp(`warning: ${dir} is an unfinished create --from .*; starting over`), 'and says it starts over')
  t.notOk(fs.existsSync(path.join(dir, PARTIAL_FILE)), 'the mark is gone')
  const { store: copy } = await openStore(dir)
  t.teardown(() => copy.close())
  t.equal(await imageSha(copy), want, 'the store made reads like the original')
})

t.test('a create --from still running is not trampled: BUSY, naming it', async t => {
  const root = tmpDir('create-from-busy')
  t.teardown(() => cleanup(root))
  const dir = path.join(root, 'b')
  fs.mkdirSync(dir)
  // The mark of a live create --from (this test's own pid stands for it).
  const mark = { from: '/some/replica', host: (await import('node:os')).hostname(), pid: process.pid, startedAt: new Date().toISOString() }
  fs.writeFileSync(path.join(dir, PARTIAL_FILE), JSON.stringify(mark))
  fs.writeFileSync(path.join(dir, 'half-fetched'), crypto.randomBytes(100))
  const status = await logdisk('status', dir)
  t.not(status.code, 0)
  t.match(status.stderr, new RegExp(`^logdisk: ${dir} is being made by logdisk create --from /some/replica \\(pid ${process.pid} on .*\\); wait for it to finish\\n$`))
  const create = await logdisk('create', dir, '--from', path.join(root, 'replica'))
  t.not(create.code, 0, 'a second create --from is refused')
  t.match(create.stderr, /is being made by logdisk create --from/)
  t.ok(fs.existsSync(path.join(dir, 'half-fetched')), 'and touches nothing')
})
