// A store that replicates takes the replica's lease for a command that writes while it is not
// mounted, as a mount does (docs/REPLICATION.md "One writer"): refused in one line while
// another store holds it, and what the command wrote is on the replica once it returns. Offline
// snapshots and syncs succeeded while another store held the lease, and the store diverged
// from its replica without a word until its next mount (a hostile test, helper-50).
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { canMount, cleanup, logdisk, tmpDir } from './helpers/cli'

const skip = canMount()

async function ok (...args: string[]): Promise<string> {
  const r = await logdisk(...args)
  if (r.code !== 0) throw new Error(`logdisk ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`)
  return r.stdout
}

t.test('offline writes of a replicating store take the lease: shipped when free, refused while another store holds it', { skip, timeout: 240_000 }, async t => {
  const root = tmpDir('repl-offline')
  t.teardown(() => cleanup(root, t))
  const replica = path.join(root, 'replica')
  fs.mkdirSync(replica)
  const a = path.join(root, 'a')
  await ok('create', a, '--size', '64M', '--segment-size', '2M')
  await ok('policy', 'set', a, `replicate.target=${replica}`)
  await ok('snapshot', a, '--name', 'offline1')
  const b = path.join(root, 'b')
  await ok('create', b, '--from', replica)
  t.match(await ok('snapshots', b), /offline1/, 'an offline snapshot is on the replica once the command returns')

  // A clone of a snapshot there cannot replicate until promoted: policy set says so (every
  // later write and mount was refused for it instead).
  const cl = path.join(root, 'clone')
  await ok('clone', replica, 'offline1', cl)
  const refused = await logdisk('policy', 'set', cl, `replicate.target=${replica}`)
  t.not(refused.code, 0, 'policy set replicate.target on a clone: refused')
  t.match(refused.stderr, /^logdisk: replicate\.target=\S+: \S+ is a clone: its replica would lack the parent's blocks; promote it first \(logdisk promote \S+\); nothing was changed\n$/, 'in one line')

  // b continues the replica (mounted: it holds the lease); a's offline writes are refused.
  await ok('policy', 'set', b, `replicate.target=${replica}`)
  const mnt = path.join(root, 'mnt-b')
  fs.mkdirSync(mnt)
  await ok('mount', b, mnt, '--takeover')
  for (const args of [['snapshot', a, '--name', 'offline2'], ['sync', a]]) {
    const r = await logdisk(...args)
    t.not(r.code, 0, `${args[0]} of a while b holds the lease: refused`)
    t.match(r.stderr, /^logdisk: .*(the lease is held by|was taken over by|history this store does not have)/, `${args[0]}: naming why`)
    t.equal(r.stderr.trim().split('\n').length, 1, `${args[0]}: one line`)
    t.notMatch(r.stderr, /archive/, `${args[0]}: the replica is not called an archive (it said "archive directory")`)
    t.comment(r.stderr.trim())
  }
  t.notMatch(await ok('snapshots', a), /offline2/, 'and a changed nothing')
  await ok('unmount', mnt)

  // A resize writes nothing to the log: it reaches the replica with a manifest of its own.
  await ok('resize', b, '--size', '96M')
  const e = path.join(root, 'e')
  await ok('create', e, '--from', path.relative(process.cwd(), replica)) // a relative path, as every path may be
  t.match(await ok('status', e), /96\.0 MiB/, 'an offline resize is on the replica once the command returns')

  // A target out of reach (its disk not mounted): the command works, and says its writes are
  // not on the replica yet, in one line.
  const c = path.join(root, 'c')
  await ok('create', c, '--size', '64M', '--segment-size', '2M')
  fs.mkdirSync(path.join(root, 'unplugged'))
  await ok('policy', 'set', c, `replicate.target=${path.join(root, 'unplugged')}`)
  fs.renameSync(path.join(root, 'unplugged'), path.join(root, 'unplugged.away'))
  const r = await logdisk('snapshot', c, '--name', 'away')
  t.equal(r.code, 0, `snapshot with the target out of reach works: ${r.stderr}`)
  t.match(r.stderr, /^logdisk: warning: replication: what this command wrote is not on the replica \S+unplugged yet \(.*\); it is shipped at the next mount or write\n$/, 'and says it is not shipped yet, in one line')
})
