import type { Command } from 'commander'
import type { StoreStatus } from '../../store'
import { runOp } from '../on-store'
import { formatBytes } from '../units'
import type { ReplicationStatus } from '../../replicate/replicator'
import type { Rates } from '../../metrics/metrics'

type Status = StoreStatus & { mountpoint?: string, pid?: number, transport?: string, spaceBytes?: Record<string, number>, pool?: { warnings: string[] }, replication?: Partial<ReplicationStatus>, rates?: Rates, metrics?: string | null }

function ratesLine (r: Rates): string {
  const n = (x: number): string => x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2)
  return `read ${formatBytes(r.readBytesPerSec)}/s (${n(r.readOpsPerSec)} op/s), write ${formatBytes(r.writeBytesPerSec)}/s (${n(r.writeOpsPerSec)} op/s), ` +
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

export function register (program: Command): void {
  program.command('status <store>')
    .description('size, bytes written, segments by state, index position')
    .option('--json', 'print JSON (documented in docs/CLI.md)')
    .action(async (storeArg: string, opts: { json?: boolean }) => {
      const status = await runOp<Status>(storeArg, 'status')
      if (opts.json) {
        console.log(JSON.stringify(status, null, 2))
        return
      }
      const s = status.segments
      const lines = [
        ['store', status.dir],
        ['mounted', status.mountpoint ? `${status.mountpoint} (pid ${status.pid}${status.transport ? `, ${status.transport}` : ''})` : 'no'],
        ['size', `${formatBytes(status.sizeBytes)} (block ${formatBytes(status.blockBytes)}, segment ${formatBytes(status.segmentBytes)})`],
        ['written', formatBytes(status.writtenBytes)],
        ['log', `${formatBytes(status.logBytes)}; segments: ${s.current} current, ${s.active} active, ${s.inactive} inactive, ${s.archived} archived, ${s.recycled} recycled`],
        ['on disk', Object.entries(status.spaceBytes ?? {}).map(([k, v]) => `${k} ${formatBytes(v)}`).join(', ')],
        ['index', `seq ${status.index.seq}, checkpoint seq ${status.index.checkpointSeq}, ${status.index.pendingBlocks} blocks pending`],
        ['memory', `block map ${formatBytes(status.mapMemoryBytes)}`],
        ['history', historyLine(status.history)]
      ]
      if (status.rates) lines.push(['rates', ratesLine(status.rates)])
      if (status.metrics) lines.push(['metrics', `http://${status.metrics}/metrics`])
      const cut = status.recovery.cut
      if (cut && cut.savedTo) lines.push(['recovery', `cut a torn tail of ${cut.bytes} bytes in segment ${cut.segment} (${cut.reason}); kept in ${cut.savedTo}`])
      else if (cut) lines.push(['recovery', `a torn tail of ${cut.bytes} bytes in segment ${cut.segment} (${cut.reason}) is left for the next command that writes to cut (this one only reads)`])
      const r = status.replication
      if (r) {
        lines.push(['replica', r.lagBytes === undefined
          ? `${r.target} (${r.state})`
          : `${r.target} (${r.state}, generation ${r.generation ?? '-'}): lag ${formatBytes(r.lagBytes)}, ${r.lagSeconds} s; shipped to sequence ${r.shippedSeq} of ${r.localSeq}`])
      }
      for (const [k, v] of lines) console.log(`${k.padEnd(9)} ${v}`)
      for (const w of [...status.pool?.warnings ?? [], ...r?.warnings ?? []]) console.log(`warning  ${w}`)
    })
}
