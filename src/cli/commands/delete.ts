import type { Command } from 'commander'
import type { SnapshotRecord } from '../../store'
import { runOp } from '../on-store'
import { printJson } from '../output'

export function register (program: Command): void {
  program.command('delete <store> <snapshot>')
    .description('delete a snapshot: its image goes, its volume id is freed; refused while its image is open')
    .option('--forget-gone-clones', 'the clones of it whose directories are gone were removed, not moved: forget them and delete')
    .option('--json', 'print the deleted snapshot\'s record')
    .action(async (storeArg: string, name: string, opts: { forgetGoneClones?: boolean, json?: boolean }) => {
      const snap = await runOp<SnapshotRecord>(storeArg, 'delete', { name, ...(opts.forgetGoneClones ? { forgetGoneClones: true } : {}) })
      if (opts.json) return printJson(snap)
      console.log(`deleted snapshot ${snap.name} (volume id ${snap.id ?? '-'})`)
    })
}
