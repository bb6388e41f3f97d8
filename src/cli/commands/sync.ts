import type { Command } from 'commander'
import { withFrozen } from '../freeze'
import { runOp } from '../on-store'

export function register (program: Command): void {
  program.command('sync <store>')
    .description('write a sync point (time, note) into the log; prints its id, usable with restore --at')
    .option('--note <text>', 'what this point is', '')
    .option('--freeze <fs-mountpoint>', 'fsfreeze this filesystem around the point (application-consistent)')
    .option('--json', 'print JSON')
    .action(async (storeArg: string, opts: { note: string, freeze?: string, json?: boolean }) => {
      const point = await withFrozen(storeArg, opts.freeze, frozen => runOp<{ seq: number, timeMs: number }>(storeArg, 'sync', { note: opts.note, frozen }))
      if (opts.json) console.log(JSON.stringify({ id: point.seq, time: new Date(point.timeMs).toISOString(), frozen: !!opts.freeze }))
      else console.log(point.seq)
    })
}
