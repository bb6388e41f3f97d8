import path from 'node:path'
import type { Command } from 'commander'
import { LogdiskError } from '../../errors'
import type { ExportResult } from '../../copy/export'
import { runOp } from '../on-store'
import { runTracked } from '../progress'
import { formatBytes } from '../units'

export { runTracked } from '../progress'

export function register (program: Command): void {
  program.command('export <store> <snapshot>')
    .description('write a full block-level copy of a snapshot (a quick recovery volume) to a sparse image file or a block device')
    .requiredOption('--out <file|device>', 'image file to create (sparse), or a block device to overwrite')
    .option('--delete-after', 'delete the snapshot once the copy is complete and fsynced')
    .option('--force', 'overwrite --out if it is an existing file')
    .option('--json', 'print the result as JSON')
    .action(async (storeArg: string, name: string, opts: { out: string, deleteAfter?: boolean, force?: boolean, json?: boolean }) => {
      const out = path.resolve(opts.out)
      const r = await runTracked<ExportResult>(storeArg, 'export', { name, out, force: !!opts.force }, 'exporting')
      let deleted = false
      if (opts.deleteAfter) {
        try {
          await runOp(storeArg, 'delete', { name })
          deleted = true
        } catch (err) {
          const why = err instanceof LogdiskError ? err.message : String(err)
          throw new LogdiskError(err instanceof LogdiskError ? err.code : 'IO', `exported ${name} to ${r.out} but did not delete it: ${why}`)
        }
      }
      if (opts.json) return console.log(JSON.stringify({ ...r, deleted }, null, 2))
      const what = r.device ? `block device ${r.out}` : r.out
      console.log(`exported snapshot ${r.snapshot} to ${what} (${formatBytes(r.sizeBytes)}, ${formatBytes(r.writtenBytes)} written)${deleted ? `; deleted snapshot ${name}` : ''}`)
    })
}
