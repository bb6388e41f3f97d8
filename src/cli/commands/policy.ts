import type { Command } from 'commander'
import { LogdiskError, isLogdiskError } from '../../errors'
import { request } from '../../daemon/control'
import { readDaemonInfo } from '../../daemon/paths'
import { checkTargets } from '../../policy/check-targets'
import { applyAssignments, describePolicy, readPolicy, writePolicy, type Policy } from '../../policy/policy'
import { prepareStore } from '../store-access'
import { printJson } from '../output'

export function register (program: Command): void {
  const policy = program.command('policy').description('show or set the store\'s policies (validated; see docs/CLI.md)')
  policy.command('show <store>')
    .option('--json', 'print JSON')
    .action((storeArg: string, opts: { json?: boolean }) => {
      const { dir } = prepareStore(storeArg, 'read')
      const rows = describePolicy(readPolicy(dir))
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
      writePolicy(dir, next)
      const applied = await applyInDaemon(dir, before)
      if (opts.json) {
        const all = Object.fromEntries(describePolicy(next).map(r => [r.key, r.value]))
        const set = Object.fromEntries(assignments.map(a => a.slice(0, a.indexOf('='))).map(k => [k, all[k]]))
        return printJson({ set, policy: all, applied: applied ?? null })
      }
      for (const a of assignments) console.log(`set ${a}`)
      if (applied) console.log(`applied by the mount daemon (pid ${applied.pid})`)
    })
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
