import type { Command } from 'commander'
import { unfinishedReceive, unfinishedReceiveText } from '../../copy/receive-marker'
import type { StoreStatus } from '../../store'
import { runOp } from '../on-store'
import { formatBytes } from '../units'
import { warn } from '../output'
import { pickColumns, tableOptions, type Column, type TableOptions } from '../table'
import type { ReplicationStatus } from '../../replicate/replicator'
import type { Rates } from '../../metrics/metrics'
import type { RunningJob } from '../../ops/ops'

type Status = StoreStatus & { mountpoint?: string, pid?: number, transport?: string, spaceBytes?: Record<string, number>, pool?: { warnings: string[] }, replication?: Partial<ReplicationStatus>, rates?: Rates, metrics?: string | null, jobs?: RunningJob[] }

function ratesLine (r: Rates, size: (n: number) => string): string {
  const n = (x: number): string => x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2)
  return `read ${size(r.readBytesPerSec)}/s (${n(r.readOpsPerSec)} op/s), write ${size(r.writeBytesPerSec)}/s (${n(r.writeOpsPerSec)} op/s), ` +
    `${n(r.flushesPerSec)} flush/s, ${n(r.errorsPerSec)} errors/s over the last ${r.windowSeconds} s`
}

/** What restores can reach: the window, and the horizon compaction left (snapshots always). */
function historyLine (h: StoreStatus['history']): string {
  const keep = h.keepMs === null || !Number.isFinite(h.keepMs) ? 'forever' : formatDuration(h.keepMs)
  const from = h.horizonSeq > 0 ? `restorable from sequence ${h.horizonSeq + 1}` : 'every point restorable'
  return `kept ${keep} (history.keep); ${from}; every snapshot`
}

function formatDuration (ms: number): string {
  for (const [unit, n] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) if (ms > 0 && ms % n === 0) return `${ms / n}${unit}`
  return `${ms}ms`
}

/**
 * The lines of `status`, by name: `-o` picks them (as the columns of the listing commands),
 * `--bytes` prints sizes exactly, `-H` prints `name<TAB>value` without padding. A line with
 * nothing to say (no rates when not mounted) returns undefined and is left out.
 */
const LINES: Array<[string, (s: Status, size: (n: number) => string) => string | undefined]> = [
  ['store', s => s.dir],
  ['mounted', s => s.mountpoint ? `${s.mountpoint} (pid ${s.pid}${s.transport ? `, ${s.transport}` : ''})` : 'no'],
  // What the daemon runs for commands now (compact, restore, a drain ...): a user who Ctrl-C'd one sees it go on or end.
  ['jobs', s => s.jobs && s.jobs.length > 0
    ? s.jobs.map(j => `${j.op}${j.total > 0 ? ` ${Math.floor(100 * j.done / j.total)}%` : ''} (for ${Math.round((Date.now() - j.startedMs) / 1000)} s)`).join(', ')
    : undefined],
  ['size', (s, size) => `${size(s.sizeBytes)} (block ${size(s.blockBytes)}, segment ${size(s.segmentBytes)})`],
  ['written', (s, size) => size(s.writtenBytes)],
  ['log', (s, size) => {
    const g = s.segments
    return `${size(s.logBytes)}; segments: ${g.current} current, ${g.active} active, ${g.inactive} inactive, ${g.archived} archived, ${g.recycled} recycled`
  }],
  ['on disk', (s, size) => Object.entries(s.spaceBytes ?? {}).map(([k, v]) => `${k} ${size(v)}`).join(', ')],
  ['index', s => `seq ${s.index.seq}, checkpoint seq ${s.index.checkpointSeq}, ${s.index.pendingBlocks} blocks pending`],
  ['memory', (s, size) => `block map ${size(s.mapMemoryBytes)}`],
  ['history', s => historyLine(s.history)],
  ['rates', (s, size) => s.rates ? ratesLine(s.rates, size) : undefined],
  ['metrics', s => s.metrics ? `http://${s.metrics}/metrics` : undefined],
  ['recovery', (s, size) => {
    const cut = s.recovery.cut
    if (cut && cut.savedTo) return `cut a torn tail of ${size(cut.bytes)} in segment ${cut.segment} (${cut.reason}); kept in ${cut.savedTo}`
    // Entries another directory with this store's identity wrote past its clean close (recovery.ts): not torn, and not cut by a write either (writes are refused with the way out).
    if (cut?.by !== undefined) return `read as it was at its last clean close: the log goes on from segment ${cut.segment} with ${size(cut.bytes)} or more that ${cut.by} wrote since (${cut.reason}); a command that writes refuses them and says the way out`
    if (cut) return `a torn tail of ${size(cut.bytes)} in segment ${cut.segment} (${cut.reason}) is left for the next command that writes to cut (this one only reads)`
    return undefined
  }],
  ['replica', (s, size) => {
    const r = s.replication
    if (!r) return undefined
    return r.lagBytes === undefined
      ? `${r.target} (${r.state})`
      : `${r.target} (${r.state}, generation ${r.generation ?? '-'}): lag ${size(r.lagBytes)}, ${r.lagSeconds} s; shipped to sequence ${r.shippedSeq} of ${r.localSeq}` +
        // An unreachable target shows as shipping with a growing lag: why, before lagWarn says so.
        (r.lastError ? `; last error: ${r.lastError}` : '')
  }]
]
// -o takes the names without spaces ("ondisk").
const COLUMNS: Array<Column<Status>> = LINES.map(([label, value]) => ({
  name: label.replace(/ /g, ''),
  cell: (s, exact) => value(s, exact ? n => `${Math.round(n)} bytes` : formatBytes) ?? ''
}))

export function register (program: Command): void {
  tableOptions(program.command('status <store>')
    .description('size, bytes written, segments by state, index position; when mounted, I/O rates of the last minute'), COLUMNS.map(c => c.name))
    .option('--json', 'print JSON (documented in docs/CLI.md)')
    .action(async (storeArg: string, opts: TableOptions & { json?: boolean }) => {
      const columns = pickColumns('status', COLUMNS, opts.output)
      const status = await runOp<Status>(storeArg, 'status')
      if (opts.json) {
        console.log(JSON.stringify(status, null, 2))
        return
      }
      for (const c of columns) {
        const v = c.cell(status, !!opts.bytes)
        // Without -o, lines with nothing to say are left out; asked for by name, they print empty.
        if (v === '' && opts.output === undefined) continue
        const label = LINES.find(([l]) => l.replace(/ /g, '') === c.name)![0]
        console.log(opts.scripted ? `${c.name}\t${v}` : `${label.padEnd(9)} ${v}`)
      }
      if (opts.output !== undefined) return
      const warnings = [...status.pool?.warnings ?? [], ...status.replication?.warnings ?? []]
      const unfinished = unfinishedReceive(status.dir)
      if (unfinished) warnings.unshift(unfinishedReceiveText(status.dir, unfinished))
      if (status.writebackFailed) warnings.unshift('an fdatasync of a store file failed: nothing that syncs that file (a flush, when it is the log\'s) succeeds until the store is unmounted and mounted again (the daemon log says which file)')
      for (const w of warnings) {
        if (opts.scripted) warn(w)
        else console.log(`warning  ${w}`)
      }
    })
}
