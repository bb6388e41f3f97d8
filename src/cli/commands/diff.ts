import type { Command } from 'commander'
import type { DiffRange, DiffResult } from '../../copy/diff'
import { runOp } from '../on-store'
import { pickColumns, printTable, sizeCell, tableOptions, type Column, type TableOptions } from '../table'
import { formatBytes } from '../units'

// OFFSET is a position on the volume, not a size: always exact, so it can be fed to dd.
const COLUMNS: Array<Column<DiffRange>> = [
  { name: 'start', cell: r => r.start },
  { name: 'end', cell: r => r.end },
  { name: 'blocks', cell: r => r.count },
  { name: 'offset', cell: r => r.offset },
  { name: 'bytes', cell: (r, exact) => sizeCell(r.bytes, exact) }
]

export function register (program: Command): void {
  tableOptions(program.command('diff <store> <snapshotA> <snapshotB>')
    .description('list the block ranges written between two snapshots (adjacent blocks merged)'), COLUMNS.map(c => c.name))
    .option('--json', 'print JSON (documented in docs/STREAM.md)')
    .action(async (storeArg: string, a: string, b: string, opts: TableOptions & { json?: boolean }) => {
      const columns = pickColumns('diff', COLUMNS, opts.output)
      const d = await runOp<DiffResult>(storeArg, 'diff', { a, b })
      if (opts.json) return console.log(JSON.stringify(d, null, 2))
      printTable(columns, d.ranges, opts)
      if (!opts.scripted) console.log(`${d.ranges.length} ranges, ${d.blocks} blocks (${opts.bytes ? `${d.bytes} bytes` : formatBytes(d.bytes)}) written between ${d.from.name} and ${d.to.name}`)
    })
}
