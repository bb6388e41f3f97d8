import type { Command } from 'commander'
import type { SnapshotRecord } from '../../store'
import { runOp } from '../on-store'
import { formatBytes } from '../units'

type Listed = SnapshotRecord & { time: string, pinnedBytes: number }

export function register (program: Command): void {
  program.command('snapshots <store>')
    .description('list snapshots: id, name, time, log position, bytes each pins alone')
    .option('--json', 'print JSON (documented in docs/CLI.md)')
    .action(async (storeArg: string, opts: { json?: boolean }) => {
      const list = await runOp<Listed[]>(storeArg, 'snapshots')
      if (opts.json) return console.log(JSON.stringify(list, null, 2))
      console.log(['ID', 'NAME', 'TIME', 'SEQ', 'CONSISTENCY', 'PINS'].join('\t'))
      for (const s of list) console.log([s.id ?? '-', s.name, s.time, s.seq, s.frozen ? 'frozen' : 'crash', formatBytes(s.pinnedBytes)].join('\t'))
    })
}
