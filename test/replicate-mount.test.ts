// Replication end to end through the CLI and real mounts (issue 14 items 1-3): a mounted store
// with replicate.target ships what is written to current.img (status shows the lag, in bytes
// and seconds), `create --from` on "another host" builds a store whose current.img is
// byte-identical, a second writer's mount is refused with one line naming the holder, and
// `mount --takeover` fences the first host. A directory target (speed); S3 behaviour is in
// replicate-ceph.test.ts.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { parseTarget } from '../src/archive'
import { newestManifest } from '../src/replicate'
import { CLI, canMount, cleanup, daemonPid, run, tmpDir } from './helpers/cli'
import { writeAt } from './helpers/image-file'

t.setTimeout(600_000)

const skip = canMount()
const MiB = 1024 * 1024

function pattern (seed: number, bytes: number): Buffer {
  const key = crypto.createHash('sha256').update(`replicate-mount ${seed}`).digest()
  return crypto.createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(bytes))
}

const cli = (...args: string[]) => run(process.execPath, [CLI, ...args], { timeoutMs: 120_000 })

async function ok (...args: string[]): Promise<string> {
  const r = await cli(...args)
  if (r.code !== 0) throw new Error(`logdisk ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`)
  return r.stdout
}

async function until (what: string, cond: () => Promise<boolean>, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

async function status (store: string): Promise<any> {
  return JSON.parse(await ok('status', store, '--json'))
}

function shaFile (file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex')
}

async function shaStore (dir: string): Promise<string> {
  const { store } = await openStore(dir)
  try {
    const h = crypto.createHash('sha256')
    for (let off = 0; off < store.sizeBytes; off += 4 * MiB) h.update(await store.read(off, 4 * MiB))
    return h.digest('hex')
  } finally {
    await store.close()
  }
}

t.test('mount replicates, create --from recovers byte for byte, one writer, takeover', { skip }, async t => {
  const root = tmpDir('repl-mount')
  t.teardown(() => cleanup(root))
  const replica = path.join(root, 'replica')
  fs.mkdirSync(replica)
  const a = path.join(root, 'a')
  const mntA = path.join(root, 'mnt-a')
  fs.mkdirSync(mntA)
  await ok('create', a, '--size', '64M', '--segment-size', '2M')
  await ok('mount', a, mntA)
  const img = path.join(mntA, 'current.img')
  writeAt(img, 60 * MiB, pattern(99, 1 * MiB)) // written before replication is on: shipped too
  // Set on the mounted store: the policy engine starts replication at its next tick.
  await ok('policy', 'set', a, `replicate.target=${replica}`, 'replicate.interval=200ms', 'replicate.lagWarn=5s')
  await until('replication started by the policy engine', async () => (await status(a)).replication?.generation === 1)

  // Lag: from each fsync'd write to the replica holding it.
  const lags: number[] = []
  for (let i = 0; i < 6; i++) {
    writeAt(img, i * 5 * MiB, pattern(i, 3 * MiB))
    const written = Date.now()
    // Watched on the replica itself, every 20 ms (a CLI status per poll would cost more than
    // the lag): the first manifest that covers the whole write, whose sequence status tells after.
    const target = parseTarget(replica)
    const seen: Array<{ at: number, seq: number }> = []
    let stableSince = Date.now()
    while (Date.now() - stableSince < 1500) {
      const seq = (await newestManifest(target))?.manifest.point.seq ?? 0
      if (seen.length === 0 || seen[seen.length - 1].seq !== seq) { seen.push({ at: Date.now(), seq }); stableSince = Date.now() }
      await new Promise(resolve => setTimeout(resolve, 20))
    }
    const seq = (await status(a)).index.seq
    await until('the write on the replica', async () => ((await newestManifest(target))?.manifest.point.seq ?? 0) >= seq)
    const first = seen.find(o => o.seq >= seq) ?? { at: Date.now() }
    lags.push((first.at - written) / 1000)
  }
  lags.sort((x, y) => x - y)
  t.comment(`replication lag after an fsync'd 3 MiB write (interval 200ms, directory): p50 ${lags[Math.floor(lags.length / 2)].toFixed(2)} s, max ${lags[lags.length - 1].toFixed(2)} s`)
  await ok('snapshot', a, '--name', 'golden')
  writeAt(img, 1 * MiB + 100, pattern(9, 50_000))
  await until('caught up', async () => { const s = await status(a); return s.replication.state === 'caught-up' })
  const s = await status(a)
  t.equal(s.replication.target, replica)
  t.equal(s.replication.lagBytes, 0)
  t.equal(s.replication.lagSeconds, 0)
  t.match(await ok('status', a), /replica +\S+ \(caught-up, generation 1\): lag 0 B?/, 'status shows the replica and its lag')
  // Unreachable (moved away): status says why it is behind before lagWarn would.
  fs.renameSync(replica, `${replica}.away`)
  writeAt(img, 2 * MiB, pattern(8, 1 * MiB))
  await until('the error in status', async () => /replica +\S+ \(shipping, generation 1\): .*; last error: .*replica/.test(await ok('status', a)))
  fs.renameSync(`${replica}.away`, replica)
  await until('caught up again', async () => { const s = await status(a); return s.replication.state === 'caught-up' && s.replication.lastError === null })
  t.notMatch(await ok('status', a), /last error/, 'and no more once it is back')
  const want = shaFile(img)

  // "Host B": only the replica (A stays mounted: recovering needs no lease).
  const b = path.join(root, 'b')
  const started = Date.now()
  const out = await ok('create', b, '--from', replica)
  t.comment(`create --from: ${((Date.now() - started) / 1000).toFixed(2)} s (${out.trim()})`)
  t.match(out, /created .* from .*generation 1/)
  t.equal(await shaStore(b), want, 'the recovered current.img is byte-identical')
  t.match(await ok('snapshots', b), /golden/, 'with the snapshot')
  t.match(await ok('policy', 'show', b, '--json'), /"replicate.target": ""/, 'the copy does not replicate until told to')

  // B wants to continue the replica while A holds it: refused, one line, naming A.
  await ok('policy', 'set', b, `replicate.target=${replica}`)
  const mntB = path.join(root, 'mnt-b')
  fs.mkdirSync(mntB)
  const refused = await cli('mount', b, mntB)
  t.not(refused.code, 0, 'the second writer\'s mount fails')
  t.match(refused.stderr, /^logdisk: .*the lease is held by \S+ \(pid \d+, store [0-9a-f-]+, generation 1\).*--takeover/, 'naming the holder')
  t.equal(refused.stderr.trim().split('\n').length, 1, 'one line')

  // Takeover: B writes the replica from now on, A is fenced (its writes stay local).
  await ok('mount', b, mntB, '--takeover')
  writeAt(path.join(mntB, 'current.img'), 10 * MiB, pattern(20, 1 * MiB))
  writeAt(img, 20 * MiB, pattern(21, 1 * MiB))
  await until('A fenced', async () => (await status(a)).replication.state === 'fenced')
  t.match((await status(a)).replication.warnings[0], /stopped: .*taken over by/, 'A says it was fenced, and by whom')
  await until('B caught up', async () => (await status(b)).replication.state === 'caught-up')
  t.equal((await status(b)).replication.generation, 2)
  await ok('unmount', mntB)
  const wantB = await shaStore(b)
  const c = path.join(root, 'c')
  await ok('create', c, '--from', replica)
  t.equal(await shaStore(c), wantB, 'the replica follows B, not A\'s late write')
  await ok('unmount', mntA)

  // B's daemon is killed (kill -9) while replicating: its lease stays live and names the dead
  // daemon, so a remount is refused until --takeover; the chain then goes on from what was shipped.
  await ok('mount', b, mntB)
  writeAt(path.join(mntB, 'current.img'), 30 * MiB, pattern(30, 1 * MiB))
  await until('B caught up', async () => (await status(b)).replication.state === 'caught-up')
  const genBefore = (await status(b)).replication.generation
  process.kill(daemonPid(b), 'SIGKILL')
  await new Promise(resolve => setTimeout(resolve, 500))
  await cli('unmount', mntB) // removes the stale mount
  const again = await cli('mount', b, mntB)
  t.not(again.code, 0, 'a remount within the lease ttl is refused')
  t.match(again.stderr, /the lease is held by \S+ \(pid \d+.*: pid \d+ no longer runs on this host: wait for the lease to expire or take it over \(logdisk mount --takeover\)/, 'naming the dead daemon, and saying it is gone')
  await ok('mount', b, mntB, '--takeover')
  t.equal((await status(b)).replication.generation, genBefore + 1, 'the next generation')
  writeAt(path.join(mntB, 'current.img'), 40 * MiB, pattern(31, 1 * MiB))
  await until('B caught up after the crash', async () => (await status(b)).replication.state === 'caught-up')
  await ok('unmount', mntB)
  const d = path.join(root, 'd')
  await ok('create', d, '--from', replica)
  t.equal(await shaStore(d), await shaStore(b), 'after a crash and a takeover the replica still equals the store')
})
