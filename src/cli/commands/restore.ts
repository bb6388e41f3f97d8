import path from 'node:path'
import type { Command } from 'commander'
import { runTracked } from '../progress'
import { formatBytes } from '../units'
import { printJson } from '../output'

export function register (program: Command): void {
  program.command('restore <store>')
    .description('write the image as it was at a point in time to a sparse file')
    .requiredOption('--at <point>', 'ISO time, sequence number, sync id, sync note or snapshot name')
    .requiredOption('--out <file>', 'where to write the image')
    .option('--force', 'overwrite --out if it exists')
    .option('--json', 'print {seq, timeMs, what, out, blocks, bytes}')
    .action(async (storeArg: string, opts: { at: string, out: string, force?: boolean, json?: boolean }) => {
      const r = await runTracked<{ what: string, out: string, bytes: number }>(storeArg, 'restore', { at: opts.at, out: path.resolve(opts.out), force: !!opts.force }, 'restoring')
      if (opts.json) return printJson(r)
      console.log(`restored ${r.what} to ${r.out} (${formatBytes(r.bytes)} of data)`)
    })
}
