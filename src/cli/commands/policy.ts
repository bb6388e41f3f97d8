import type { Command } from 'commander'
import { LogdiskError, isLogdiskError } from '../../errors'
import { request } from '../../daemon/control'
import { readDaemonInfo } from '../../daemon/paths'
import { checkTargets } from '../../policy/check-targets'
import { applyAssignments, describePolicy, readPolicy, unknownPolicyKeys, writePolicy, type Policy } from '../../policy/policy'
import { prepareStore } from '../store-access'
import { runOp } from '../on-store'
import type { PoolStatus } from '../../pool/pool'
import { printJson, warn } from '../output'

export function register (program: Command): void {
  const policy = program.command('policy').description('show or set the store\'s policies (validated; see docs/CLI.md)')
  policy.command('show <store>')
    .option('--json', 'print JSON')
    .action((storeArg: string, opts: { json?: boolean }) => {
      const { dir } = prepareStore(storeArg, 'read')
      const rows = describePolicy(readPolicy(dir))
      for (const key of unknownPolicyKeys(dir)) warn(`policy.json has a key no policy has, ignored: "${key}" (a typo? \`policy set\` removes it)`)
      if (opts.json) return console.log(JSON.stringify(Object.fromEntries(rows.map(r => [r.key, r.value])), null, 2))
      for (const r of rows) console.log(`${r.key}=${String(r.value)}\t(${r.values}; default ${String(r.default)})`)
    })
  policy.command('set <store> <assignments...>')
    .description('set KEY=VALUE...; all or nothing; targets are checked, and a mounted store applies the change before this returns')
    .option('--json', 'print {set: {KEY: VALUE}, policy: {every key}, applied}')
    .action(async (storeArg: string, assignments: string[], opts: { json?: boolean }) => {
      const { dir } = prepareStore(storeArg, 'write')
      const before = readPolicy(dir)
      const next = applyAssignments(before, assignments)
      await checkTargets(before, next, dir)
      await checkMirrorVolumes(storeArg, dir, before, next)
      const unknown = unknownPolicyKeys(dir)
      writePolicy(dir, next)
      for (const key of unknown) warn(`removed a key no policy has from policy.json: "${key}"`)
      const applied = await applyInDaemon(dir, before)
      const all = Object.fromEntries(describePolicy(next).map(r => [r.key, r.value]))
      const keys = [...new Set(assignments.map(a => a.slice(0, a.indexOf('='))))]
      if (opts.json) return printJson({ set: Object.fromEntries(keys.map(k => [k, all[k]])), policy: all, applied: applied ?? null })
      // The value as stored, not as typed: `mirror=02` is stored as 2 (helper-64).
      for (const k of keys) console.log(`set ${k}=${String(all[k])}`)
      if (applied) console.log(`applied by the mount daemon (pid ${applied.pid})`)
    })
}

/**
 * mirror=N puts each new segment on N volumes: with fewer volumes that take segments the store
 * took the setting, and every write that needed a new segment then failed with ENOSPC (an ext4
 * on the image goes read-only at that); only `status` said so, afterwards. Refused before
 * anything is written. A store that cannot be opened to count is not checked (its mount says why).
 */
async function checkMirrorVolumes (storeArg: string, dir: string, before: Policy, next: Policy): Promise<void> {
  if (next.mirror <= 1 || next.mirror <= before.mirror) return
  let pool: PoolStatus
  try {
    pool = await runOp<PoolStatus>(storeArg, 'pool list')
  } catch {
    return
  }
  // In auto mode a spare is assigned when a segment needs it (pool.ts status).
  const taking = pool.volumes.filter(v => v.state === 'assigned' || (v.state === 'spare' && next['pool.mode'] === 'auto'))
  if (taking.length >= next.mirror) return
  throw new LogdiskError('BAD_ARGUMENT', `mirror=${next.mirror} needs ${next.mirror} pool volumes that take segments, and ${dir} has ${taking.length}: every write that needs a new segment would fail with ENOSPC; add a volume first (logdisk pool add ${dir} DIR); nothing was changed`)
}

/**
 * A mounted store's daemon applies policy.json now, and answers once it has: `policy set`
 * returns with the change in force. When the daemon refuses it (a replica's lease held by
 * another host), the previous policy is put back, so the command changes nothing. Returns
 * undefined when no daemon runs (the next mount reads the file).
 */
async function applyInDaemon (dir: string, before: Policy): Promise<{ pid: number } | undefined> {
  const daemon = readDaemonInfo(dir)
  if (!daemon) return undefined
  try {
    return await request<{ pid: number }>(daemon.socket, 'policy')
  } catch (err) {
    if (isLogdiskError(err, 'NOT_MOUNTED')) return undefined // a stale daemon.json: nobody to tell
    writePolicy(dir, before)
    await request(daemon.socket, 'policy').catch(() => undefined)
    throw new LogdiskError(isLogdiskError(err) ? err.code : 'IO', `the mount daemon (pid ${daemon.pid}) could not apply the change: ${(err as Error).message}; policy.json is unchanged`, err)
  }
}
