import type { Command } from 'commander'
import type { SnapshotRecord } from '../../store'
import { runOp } from '../on-store'
import { pickColumns, printTable, sizeCell, tableOptions, type Column, type TableOptions } from '../table'

type Listed = SnapshotRecord & { time: string, pinnedBytes: number }

const COLUMNS: Array<Column<Listed>> = [
  { name: 'id', cell: s => s.id ?? '-' },
  { name: 'name', cell: s => s.name },
  { name: 'time', cell: s => s.time },
  { name: 'seq', cell: s => s.seq },
  { name: 'consistency', cell: s => s.frozen ? 'frozen' : 'crash' },
  { name: 'pins', cell: (s, exact) => sizeCell(s.pinnedBytes, exact) }
]

export function register (program: Command): void {
  tableOptions(program.command('snapshots <store>')
    .description('list snapshots: id, name, time, log position, bytes each pins alone'), COLUMNS.map(c => c.name))
    .option('--json', 'print JSON (documented in docs/CLI.md)')
    .action(async (storeArg: string, opts: TableOptions & { json?: boolean }) => {
      const columns = pickColumns('snapshots', COLUMNS, opts.output)
      const list = await runOp<Listed[]>(storeArg, 'snapshots')
      if (opts.json) return console.log(JSON.stringify(list, null, 2))
      printTable(columns, list, opts)
    })
}
