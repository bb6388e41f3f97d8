import type { Command } from 'commander'
import type { CompactionReport } from '../../store/compaction'
import { runOp } from '../on-store'
import { progressBar } from '../progress'
import { formatBytes } from '../units'

export function register (program: Command): void {
  program.command('compact <store>')
    .description('free versions no snapshot needs (punching holes in segments, recycling empty ones)')
    .option('--snapshot <name>', 'only the partition of this snapshot')
    .option('--json', 'print the report as JSON')
    .action(async (storeArg: string, opts: { snapshot?: string, json?: boolean }) => {
      const bar = progressBar('compacting', 'segments')
      let r: CompactionReport
      try {
        r = await runOp<CompactionReport>(storeArg, 'compact', { snapshot: opts.snapshot }, { onProgress: bar.update })
      } finally {
        bar.stop()
      }
      if (opts.json) return console.log(JSON.stringify(r, null, 2))
      console.log(`freed ${r.versionsFreed} block versions in ${r.entriesFreed} entries; punched ${formatBytes(r.bytesPunched)} in ${r.runsPunched} runs; recycled ${r.segmentsRecycled} segments; ${r.segmentsInactive} became inactive (${r.durationMs} ms)`)
    })
}
