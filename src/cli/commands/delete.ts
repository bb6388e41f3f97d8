import type { Command } from 'commander'
import type { SnapshotRecord } from '../../store'
import { runOp } from '../on-store'

export function register (program: Command): void {
  program.command('delete <store> <snapshot>')
    .description('delete a snapshot: its image goes, its volume id is freed; refused while its image is open')
    .action(async (storeArg: string, name: string) => {
      const snap = await runOp<SnapshotRecord>(storeArg, 'delete', { name })
      console.log(`deleted snapshot ${snap.name} (volume id ${snap.id ?? '-'})`)
    })
}
