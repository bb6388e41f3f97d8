import type { Command } from 'commander'
import { runTracked } from '../progress'
import { formatBytes } from '../units'

export function register (program: Command): void {
  program.command('archive <store>')
    .description('archive sealed segments to backing storage now (policy archive.target; inactive ones, and by archive.after / segments.workingSet older active ones)')
    .option('--json', 'print the report as JSON')
    .action(async (storeArg: string, opts: { json?: boolean }) => {
      const r = await runTracked<{ archived: number, removedLocal: number, bytes: number }>(storeArg, 'archive', {}, 'archiving', 'segments')
      if (opts.json) return console.log(JSON.stringify(r, null, 2))
      console.log(`archived ${r.archived} segment(s) (${formatBytes(r.bytes)} before compression); ${r.removedLocal} local cop${r.removedLocal === 1 ? 'y' : 'ies'} recycled`)
    })
}
