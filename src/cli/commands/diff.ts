import type { Command } from 'commander'
import type { DiffResult } from '../../copy/diff'
import { runOp } from '../on-store'
import { formatBytes } from '../units'

export function register (program: Command): void {
  program.command('diff <store> <snapshotA> <snapshotB>')
    .description('list the block ranges written between two snapshots (adjacent blocks merged)')
    .option('--json', 'print JSON (documented in docs/STREAM.md)')
    .action(async (storeArg: string, a: string, b: string, opts: { json?: boolean }) => {
      const d = await runOp<DiffResult>(storeArg, 'diff', { a, b })
      if (opts.json) return console.log(JSON.stringify(d, null, 2))
      console.log(['START', 'END', 'BLOCKS', 'OFFSET', 'BYTES'].join('\t'))
      for (const r of d.ranges) console.log([r.start, r.end, r.count, r.offset, r.bytes].join('\t'))
      console.log(`${d.ranges.length} ranges, ${d.blocks} blocks (${formatBytes(d.bytes)}) written between ${d.from.name} and ${d.to.name}`)
    })
}
