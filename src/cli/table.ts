import type { Command } from 'commander'
import { LogdiskError } from '../errors'
import { formatBytes } from './units'

/**
 * The tables of the listing commands (snapshots, log, pool list, diff, criteria list), chosen
 * and printed one way, as `zfs list -Hp -o` does: `-o col,col` picks and orders the columns,
 * `--bytes` prints sizes as exact byte counts instead of `1.5 GiB`, `-H` drops the header
 * (and any summary line) so a script reads only tab-separated rows.
 */
export interface Column<R> {
  /** What `-o` takes, lower case; the header is its upper-case form. */
  name: string
  /** The cell: `exact` is --bytes. */
  cell: (row: R, exact: boolean) => string | number
}

export interface TableOptions { output?: string, bytes?: boolean, scripted?: boolean }

/** A size cell: human units unless --bytes. */
export function sizeCell (bytes: number, exact: boolean): string | number {
  return exact ? bytes : formatBytes(bytes)
}

/** Adds -o, --bytes and -H to a listing command; `names` are its columns, for --help. */
export function tableOptions (cmd: Command, names: string[]): Command {
  return cmd
    .option('-o, --output <columns>', `the columns to print, comma-separated, in that order (${names.join(',')})`)
    .option('--bytes', 'sizes as exact byte counts instead of 1.5 GiB')
    .option('-H, --scripted', 'no header and no summary lines: tab-separated rows only, for scripts')
}

/**
 * The columns `-o` asks for (else `defaults`, else all), checked before the command opens anything: an unknown name is
 * one line listing the valid ones (BAD_ARGUMENT, exit 1).
 */
export function pickColumns<R> (command: string, columns: Array<Column<R>>, output: string | undefined, defaults?: string[]): Array<Column<R>> {
  if (output === undefined) return defaults ? columns.filter(c => defaults.includes(c.name)) : columns
  const names = output.split(',').map(s => s.trim().toLowerCase()).filter(s => s !== '')
  if (names.length === 0) throw new LogdiskError('BAD_ARGUMENT', `-o needs at least one column; ${command} has: ${columns.map(c => c.name).join(',')}`)
  return names.map(n => {
    const c = columns.find(c => c.name === n)
    if (!c) throw new LogdiskError('BAD_ARGUMENT', `unknown column "${n}" for ${command}; valid columns: ${columns.map(c => c.name).join(',')}`)
    return c
  })
}

/** Prints the rows tab-separated, with a header line unless -H. */
export function printTable<R> (columns: Array<Column<R>>, rows: R[], opts: TableOptions): void {
  const exact = !!opts.bytes
  if (!opts.scripted) console.log(columns.map(c => c.name.toUpperCase()).join('\t'))
  for (const r of rows) console.log(columns.map(c => String(c.cell(r, exact))).join('\t'))
}
