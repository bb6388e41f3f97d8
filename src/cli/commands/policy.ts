import path from 'node:path'
import type { Command } from 'commander'
import { applyAssignments, describePolicy, readPolicy, writePolicy } from '../../policy/policy'
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
    .description('set KEY=VALUE...; all or nothing')
    .option('--json', 'print {set: {KEY: VALUE}, policy: {every key}}')
    .action((storeArg: string, assignments: string[], opts: { json?: boolean }) => {
      const { dir } = prepareStore(storeArg, 'write')
      const next = applyAssignments(readPolicy(dir), assignments)
      writePolicy(dir, next)
      if (opts.json) {
        const all = Object.fromEntries(describePolicy(next).map(r => [r.key, r.value]))
        const set = Object.fromEntries(assignments.map(a => a.slice(0, a.indexOf('='))).map(k => [k, all[k]]))
        return printJson({ set, policy: all })
      }
      for (const a of assignments) console.log(`set ${a}`)
    })
}
