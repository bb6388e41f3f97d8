import type { Command } from 'commander'
import { EntryKind, holdsVersions, type EntryRecord, type StoreStatus } from '../../store'
import { runOp } from '../on-store'
import { pickColumns, printTable, tableOptions, type Column, type TableOptions } from '../table'

const KIND_NAMES: Record<number, string> = {
  [EntryKind.write]: 'write',
  [EntryKind.trim]: 'trim',
  [EntryKind.sync]: 'sync',
  [EntryKind.snapshot]: 'snapshot',
  [EntryKind.deleteSnapshot]: 'delete',
  [EntryKind.free]: 'free',
  [EntryKind.move]: 'move',
  [EntryKind.trimMove]: 'trim-move',
  [EntryKind.history]: 'history'
}

type Row = Record<string, unknown>

function what (r: Row): string {
  if (r.kind === 'write') return `blocks ${r.block}-${(r.block as number) + (r.count as number) - 1}${r.freed ? ' (freed)' : ''}`
  if (r.kind === 'trim') return `blocks ${r.block}-${(r.block as number) + (r.count as number) - 1} trimmed${r.freed ? ' (freed)' : ''}`
  if (r.kind === 'move') return `${r.count as number} moved versions${r.freed ? ' (freed)' : ''}`
  if (r.kind === 'trim-move') return `${r.count as number} runs of moved trims${r.freed ? ' (freed)' : ''}`
  return JSON.stringify(r.payload)
}

const COLUMNS: Array<Column<Row>> = [
  { name: 'seq', cell: r => r.seq as number },
  { name: 'time', cell: r => r.time as string },
  { name: 'kind', cell: r => r.kind as string },
  { name: 'what', cell: what },
  { name: 'block', cell: r => (r.block as number | undefined) ?? '-' },
  { name: 'count', cell: r => (r.count as number | undefined) ?? '-' },
  { name: 'freed', cell: r => r.freed ? 'yes' : 'no' }
]
const DEFAULTS = ['seq', 'time', 'kind', 'what']

export function register (program: Command): void {
  tableOptions(program.command('log <store>')
    .description('list log entries in time order (sequence, time, kind, blocks), without reading data')
    .option('--snapshot <name>', 'only the entries of this snapshot\'s partition (since the snapshot before it)'), COLUMNS.map(c => c.name))
    .option('--json', 'print JSON (documented in docs/CLI.md)')
    .action(async (storeArg: string, opts: TableOptions & { snapshot?: string, json?: boolean }) => {
      const columns = pickColumns('log', COLUMNS, opts.output, DEFAULTS)
      const entries = await runOp<Array<EntryRecord & { seq: number }>>(storeArg, 'log', { snapshot: opts.snapshot })
      const rows: Row[] = entries.map(e => ({
        // The payload first: a delete marker's payload has a `seq` of its own (the snapshot's).
        ...(holdsVersions(e.kind) ? { block: e.block, count: e.count } : { payload: e.payload }),
        seq: e.seq,
        time: new Date(e.timeMs).toISOString(),
        kind: KIND_NAMES[e.kind] ?? String(e.kind),
        ...(e.freed ? { freed: true } : {})
      }))
      if (opts.json) return console.log(JSON.stringify(rows, null, 2))
      if (!opts.scripted) {
        const { history } = await runOp<StoreStatus>(storeArg, 'status')
        if (history.horizonSeq > 0) console.log(`# entries up to sequence ${history.horizonSeq} can no longer be restored (compaction freed versions they read); snapshots can`)
      }
      printTable(columns, rows, opts)
    })
}
