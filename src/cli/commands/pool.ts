import path from 'node:path'
import type { Command } from 'commander'
import { LogdiskError } from '../../errors'
import type { PoolStatus, VolumeStatus } from '../../pool/pool'
import { runOp } from '../on-store'
import { printJson, warn } from '../output'
import { runTracked } from '../progress'
import { pickColumns, printTable, sizeCell, tableOptions, type Column, type TableOptions } from '../table'
import { formatBytes, parseSize } from '../units'

const COLUMNS: Array<Column<VolumeStatus>> = [
  { name: 'state', cell: v => v.state },
  { name: 'capacity', cell: (v, exact) => sizeCell(v.capacityBytes, exact) },
  { name: 'used', cell: (v, exact) => sizeCell(v.usedBytes, exact) },
  { name: 'segments', cell: v => v.segments },
  { name: 'dir', cell: v => v.dir + (v.internal ? ' (internal)' : '') },
  { name: 'id', cell: v => v.id }
]
const DEFAULTS = ['state', 'capacity', 'used', 'segments', 'dir']

function printVolumes (status: PoolStatus, columns: Array<Column<VolumeStatus>>, opts: TableOptions): void {
  printTable(columns, status.volumes, opts)
  if (opts.scripted) {
    // Scripts read rows only; the warnings still reach a person, on stderr.
    for (const w of status.warnings) warn(w)
    return
  }
  console.log(`use ${(status.useFraction * 100).toFixed(1)}% of assigned capacity`)
  for (const w of status.warnings) console.log(`warning: ${w}`)
}

export function register (program: Command): void {
  const pool = program.command('pool').description('the store\'s pool of directories that hold segment files')
  tableOptions(pool.command('list <store>')
    .description('list the pool volumes: state, capacity, use, segments, directory'), COLUMNS.map(c => c.name))
    .option('--json', 'print JSON')
    .action(async (storeArg: string, opts: TableOptions & { json?: boolean }) => {
      const columns = pickColumns('pool list', COLUMNS, opts.output, DEFAULTS)
      const status = await runOp<PoolStatus>(storeArg, 'pool list')
      if (opts.json) console.log(JSON.stringify(status, null, 2))
      else printVolumes(status, columns, opts)
    })
  pool.command('add <store> <dir>')
    .description('add a directory: assigned to the store now, or a spare with --spare')
    .option('--capacity <size>', 'bytes it may hold (default: the free space of its filesystem)')
    .option('--spare', 'keep it spare: assigned when the pool grows (by this store or another listing it)')
    .option('--json', 'print the volume\'s entry of pool list --json')
    .action(async (storeArg: string, dir: string, opts: { capacity?: string, spare?: boolean, json?: boolean }) => {
      const v = await runOp<VolumeStatus>(storeArg, 'pool add', {
        dir: path.resolve(dir),
        capacityBytes: opts.capacity === undefined ? undefined : parseSize(opts.capacity, '--capacity'),
        spare: !!opts.spare
      })
      // The capacity a garbled marker declared went with it (only the marker held it).
      if (v.markerSetAside !== undefined && opts.capacity === undefined) warn(`its unreadable marker was set aside as ${v.markerSetAside}; any capacity declared in it is lost, so the volume may fill its filesystem: give it again with --capacity SIZE`)
      if (opts.json) return printJson(v)
      console.log(`added ${v.dir}: ${v.state}, capacity ${formatBytes(v.capacityBytes)}`)
    })
  pool.command('remove <store> <dir>')
    .description('drain the directory (its segments move to other volumes), release it and drop it from the pool')
    .option('--json', 'print {dir, moved}')
    .action(async (storeArg: string, dir: string, opts: { json?: boolean }) => {
      const r = await runTracked<{ moved: number }>(storeArg, 'pool remove', { dir: path.resolve(dir) }, 'draining', 'segments')
      if (opts.json) return printJson({ dir: path.resolve(dir), moved: r.moved })
      console.log(`removed ${dir} (${r.moved} segment(s) moved)`)
    })
  pool.command('repair <store>')
    .description('restore lost or damaged copies of mirrored segments (mirror=2) from the surviving intact ones')
    .option('--drop-copy-writes', 'entries another copy of the store (same identity) wrote to its pool volumes after it was last closed: cut them into lost+found/ instead of refusing to open (adopt that copy first: it keeps them)')
    .option('--json', 'print {copies, staleLeft, healed, damaged, unplaced, dropped, forgotten}')
    .action(async (storeArg: string, opts: { json?: boolean, dropCopyWrites?: boolean }) => {
      const r = await runOp<{ copies: number, staleLeft: string[], healed: number, damaged: number[], unplaced: number[], dropped: { by?: string, segment: number, offset: number, bytes: number, savedTo: string, segmentsSetAside: string[] } | null, forgotten?: number }>(storeArg, 'pool repair', {}, {}, { dropCopyWrites: opts.dropCopyWrites === true })
      if (r.dropped && !opts.json) console.log(`dropped ${formatBytes(r.dropped.bytes)} that ${r.dropped.by ?? 'another copy'} wrote past this store's last clean close (segment ${r.dropped.segment} from offset ${r.dropped.offset}${r.dropped.segmentsSetAside.length > 0 ? `, and ${r.dropped.segmentsSetAside.length} later segment(s)` : ''}); kept in ${path.dirname(r.dropped.savedTo)}`)
      else if (opts.dropCopyWrites === true && !opts.json) console.log('dropped nothing: no copy of this store wrote past its last clean close')
      // Every copy it had to make was made: a stale copy it could not remove is only said.
      if (r.staleLeft.length > 0) warn(`${r.staleLeft.length} stale cop${r.staleLeft.length === 1 ? 'y' : 'ies'} the index does not name could not be removed: ${r.staleLeft.join(', ')} (read-only); the next pool repair removes ${r.staleLeft.length === 1 ? 'it' : 'them'} once the volume is writable`)
      if (opts.json) printJson(r)
      else console.log(`made ${r.copies} cop${r.copies === 1 ? 'y' : 'ies'}${r.healed > 0 ? `; healed ${r.healed} block(s) that failed their checksums in one copy from another` : ''}${(r.forgotten ?? 0) > 0 ? `; forgot ${r.forgotten!} lost cop${r.forgotten === 1 ? 'y' : 'ies'} beyond what mirror asks (the index no longer names ${r.forgotten === 1 ? 'it' : 'them'}; the other copies pass their checksums)` : ''}`)
      // Repair did what it could; these it could not (helper-61: it said nothing of them).
      // Not "every block bad in every copy": copies that cannot be lined up (a damaged entry
      // header in one) are not merged either, though each block may be whole somewhere (helper-64).
      const failed = [
        ...(r.damaged.length > 0 ? [`segment(s) ${r.damaged.join(', ')}: no copy passes its checksums, and they could not be mended from each other; reads of what no copy holds intact fail (logdisk verify names it)`] : []),
        ...(r.unplaced.length > 0 ? [`segment(s) ${r.unplaced.join(', ')}: no pool volume has room for their missing copies; add one (logdisk pool add ${storeArg} DIR) and run pool repair again`] : [])
      ]
      if (failed.length > 0) throw new LogdiskError(r.damaged.length > 0 ? 'CORRUPT' : 'NO_SPACE', failed.join('; '))
    })
}
