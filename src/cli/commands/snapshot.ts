import type { Command } from 'commander'
import type { SnapshotRecord } from '../../store'
import { withFrozen } from '../freeze'
import { runOp } from '../on-store'
import { snapshotByCriteria } from './criteria'
import { parseWhole } from '../units'

export function register (program: Command): void {
  program.command('snapshot <store>')
    .description('cut the log: a read-only <name>.img of the volume as it is now (O(1))')
    .option('--name <name>', 'snapshot name (default snap-<seq>)')
    .option('--id <n>', 'volume id (default: by the volumeId policy)')
    .option('--freeze <fs-mountpoint>', 'fsfreeze this filesystem around the cut (application-consistent)')
    .option('--json', 'print the snapshot as JSON')
    .option('--criteria <name>', 'cut by a snapshot criteria and copy its block range to its target (logdisk criteria)')
    .action(async (storeArg: string, opts: { name?: string, id?: string, freeze?: string, json?: boolean, criteria?: string }) => {
      if (opts.id !== undefined) parseWhole(opts.id, '--id') // "abc" is not a number: say so
      if (opts.criteria !== undefined) return snapshotByCriteria(storeArg, { criteria: opts.criteria, name: opts.name, id: opts.id, freeze: opts.freeze, json: opts.json })
      const snap = await withFrozen(storeArg, opts.freeze, frozen =>
        runOp<SnapshotRecord>(storeArg, 'snapshot', { name: opts.name, id: opts.id === undefined ? undefined : Number(opts.id), frozen }))
      if (opts.json) console.log(JSON.stringify(snap, null, 2))
      else console.log(`snapshot ${snap.name}: volume id ${snap.id ?? '-'}, sequence ${snap.seq}, ${snap.frozen ? 'application-consistent (frozen)' : 'crash-consistent'}`)
    })
}
