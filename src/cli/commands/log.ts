import type { Command } from 'commander'
import { EntryKind, type EntryRecord, type StoreStatus } from '../../store'
import { runOp } from '../on-store'

const KIND_NAMES: Record<number, string> = {
  [EntryKind.write]: 'write',
  [EntryKind.sync]: 'sync',
  [EntryKind.snapshot]: 'snapshot',
  [EntryKind.deleteSnapshot]: 'delete',
  [EntryKind.free]: 'free',
  [EntryKind.move]: 'move',
  [EntryKind.history]: 'history'
}

export function register (program: Command): void {
  program.command('log <store>')
    .description('list log entries in time order (sequence, time, kind, blocks), without reading data')
    .option('--snapshot <name>', 'only the entries of this snapshot\'s partition (since the snapshot before it)')
    .option('--json', 'print JSON (documented in docs/CLI.md)')
    .action(async (storeArg: string, opts: { snapshot?: string, json?: boolean }) => {
      const entries = await runOp<Array<EntryRecord & { seq: number }>>(storeArg, 'log', { snapshot: opts.snapshot })
      const rows: Array<Record<string, unknown>> = entries.map(e => ({
        // The payload first: a delete marker's payload has a `seq` of its own (the snapshot's).
        ...(e.kind === EntryKind.write || e.kind === EntryKind.move ? { block: e.block, count: e.count } : { payload: e.payload }),
        seq: e.seq,
        time: new Date(e.timeMs).toISOString(),
        kind: KIND_NAMES[e.kind] ?? String(e.kind),
        ...(e.freed ? { freed: true } : {})
      }))
      if (opts.json) return console.log(JSON.stringify(rows, null, 2))
      const { history } = await runOp<StoreStatus>(storeArg, 'status')
      if (history.horizonSeq > 0) console.log(`# entries up to sequence ${history.horizonSeq} can no longer be restored (compaction freed versions they read); snapshots can`)
      for (const r of rows) {
        const what = r.kind === 'write' ? `blocks ${r.block}-${(r.block as number) + (r.count as number) - 1}${r.freed ? ' (freed)' : ''}` : r.kind === 'move' ? `${r.count as number} moved versions${r.freed ? ' (freed)' : ''}` : JSON.stringify(r.payload)
        console.log(`${r.seq}\t${r.time}\t${r.kind}\t${what}`)
      }
    })
}
