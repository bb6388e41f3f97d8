import type { Command } from 'commander'
import type { CompactionReport } from '../../store/compaction'
import { LogdiskError } from '../../errors'
import { runTracked } from '../progress'
import { formatBytes } from '../units'

export function register (program: Command): void {
  program.command('compact <store>')
    .description('free versions no snapshot needs (punching holes in segments, recycling empty ones)')
    .option('--snapshot <name>', 'only the partition of this snapshot')
    .option('--into-baseline', 'merge everything up to the oldest kept snapshot into the block-ordered baseline, then compact')
    .option('--json', 'print the report as JSON')
    .action(async (storeArg: string, opts: { snapshot?: string, intoBaseline?: boolean, json?: boolean }) => {
      // A merge takes everything up to the oldest kept snapshot: it cannot be limited to one
      // partition, and silently doing the whole store was not what was asked.
      if (opts.snapshot !== undefined && opts.intoBaseline) throw new LogdiskError('BAD_ARGUMENT', '--snapshot and --into-baseline do not go together: a baseline merge takes everything up to the oldest kept snapshot; run one or the other')
      const out = await runTracked<CompactionReport | { blocks: number, cutSeq: number, trimmedSlots?: number, compaction: CompactionReport }>(storeArg, 'compact', { snapshot: opts.snapshot, intoBaseline: !!opts.intoBaseline },
        opts.intoBaseline ? 'merging' : 'compacting', opts.intoBaseline ? 'blocks' : 'segments')
      if (opts.json) return console.log(JSON.stringify(out, null, 2))
      if ('compaction' in out) console.log(`merged ${out.blocks} blocks into the baseline (everything up to sequence ${out.cutSeq})${(out.trimmedSlots ?? 0) > 0 ? `; cleared the slots of ${out.trimmedSlots} trimmed blocks` : ''}`)
      const r = 'compaction' in out ? out.compaction : out
      console.log(`freed ${r.versionsFreed} block versions in ${r.entriesFreed} entries; moved ${r.versionsMoved} out of ${r.segmentsCleaned} mostly-dead segments${r.trimsMoved > 0 ? ` and ${r.trimsMoved} trimmed blocks` : ''}; punched ${formatBytes(r.bytesPunched)} in ${r.runsPunched} runs; recycled ${r.segmentsRecycled} segments; ${r.segmentsInactive} became inactive (${r.durationMs} ms)`)
    })
}
