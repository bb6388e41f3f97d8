import type { Command } from 'commander'
import { runOp } from '../on-store'
import { printJson } from '../output'
import { formatBytes, parseSize } from '../units'

/**
 * `resize <store> --size N|+N`: grows the volume, online too (the daemon serves the new size
 * at once; a loop device sees it after `losetup -c DEVICE`, then `resize2fs DEVICE`); shrinks
 * only when no version of any block past the new end exists.
 */
export function register (program: Command): void {
  program.command('resize <store>')
    .description('grow the volume (online too: losetup -c DEVICE, then resize2fs); shrink only if nothing was written past the new end')
    .requiredOption('--size <size>', 'the new size, like 16G, or +4G to grow by')
    .option('--json', 'print {dir, fromBytes, toBytes}')
    .action(async (storeArg: string, opts: { size: string, json?: boolean }) => {
      const grow = opts.size.trim().startsWith('+')
      const sizeBytes = parseSize(grow ? opts.size.trim().slice(1) : opts.size, '--size')
      const r = await runOp<{ dir: string, fromBytes: number, toBytes: number }>(storeArg, 'resize', { sizeBytes, grow })
      if (opts.json) return printJson(r)
      // Exact bytes when the rounded sizes look alike (+1.5M of 1.5 GiB read "1.5 GiB -> 1.5 GiB").
      const size = formatBytes(r.fromBytes) === formatBytes(r.toBytes) ? (n: number) => `${n} bytes` : formatBytes
      console.log(r.fromBytes === r.toBytes ? `${r.dir} is already ${formatBytes(r.toBytes)}` : `resized ${r.dir}: ${size(r.fromBytes)} -> ${size(r.toBytes)}`)
    })
}
