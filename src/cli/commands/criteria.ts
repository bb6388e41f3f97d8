import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import type { Command } from 'commander'
import { LogdiskError } from '../../errors'
import { createCriteria, deleteCriteria, getCriteria, readCriteriaFile, type CopyResult, type Criteria } from '../../copy/criteria'
import type { SnapshotRecord } from '../../store'
import { prepareStore } from '../store-access'
import { withFrozen } from '../freeze'
import { runOp } from '../on-store'
import { formatBytes } from '../units'
import { runTracked } from '../progress'
import { pickColumns, printTable, tableOptions, type Column, type TableOptions } from '../table'

export const CRITERIA_LOG = 'criteria.log'
const LOCK_WAIT_MS = 60_000

function blockNumber (text: string | undefined, what: string): number | undefined {
  if (text === undefined) return undefined
  if (!/^\d+$/.test(text)) throw new LogdiskError('BAD_ARGUMENT', `${what} "${text}" must be a block number (0, 1, ...)`)
  return Number(text)
}

function range (c: Criteria): string {
  return `${c.startBlock}-${c.endBlock ?? 'end'}`
}

const LIST_COLUMNS: Array<Column<Criteria>> = [
  { name: 'name', cell: c => c.name },
  { name: 'blocks', cell: range },
  { name: 'mode', cell: c => c.mode },
  { name: 'background', cell: c => c.background ? 'yes' : 'no' },
  { name: 'target', cell: c => c.target },
  { name: 'lastrun', cell: c => c.lastRun ? `${c.lastRun.snapshot} ${c.lastRun.finishedAt}` : '-' },
  { name: 'runs', cell: c => c.runs }
]

function describe (c: Criteria): Array<[string, string]> {
  const last = c.lastRun
  return [
    ['name', c.name],
    ['blocks', range(c)],
    ['mode', c.mode],
    ['background', String(c.background)],
    ['target', c.target],
    ['freeze', c.freeze ?? '-'],
    ['runs', String(c.runs)],
    ['last run', last ? `${last.snapshot} (seq ${last.seq}) -> ${last.target}, ${last.blocks} blocks${last.mode === 'partial' ? ` changed since seq ${last.baseSeq}` : ''}, ${last.finishedAt}` : '-'],
    ['last error', c.lastError ? `${c.lastError.snapshot}: ${c.lastError.message} (${c.lastError.at})` : '-']
  ]
}

function printCopy (r: CopyResult): void {
  const what = r.mode === 'partial' ? `${r.blocks} blocks changed since ${r.baseSeq === 0 ? 'the start' : `seq ${r.baseSeq}`}` : `${r.blocks} blocks`
  console.log(`copied snapshot ${r.snapshot} by criteria ${r.criteria} to ${r.out} (${r.mode}: ${what}, ${formatBytes(r.writtenBytes)} written${r.sidecar ? `; ranges in ${r.sidecar}` : ''})`)
}

/** criteriaCopy, waiting while another command holds the unmounted store (background runs). */
async function copyWaiting (dir: string, criteria: string, snapshot: string): Promise<CopyResult> {
  const deadline = Date.now() + LOCK_WAIT_MS
  while (true) {
    try {
      return await runTracked<CopyResult>(dir, 'criteriaCopy', { criteria, snapshot }, 'copying')
    } catch (err) {
      if (!(err instanceof LogdiskError) || err.code !== 'STORE_LOCKED' || Date.now() > deadline) throw err
      await new Promise(resolve => setTimeout(resolve, 200))
    }
  }
}

/**
 * `snapshot --criteria NAME` (executeSnapshot, 002 Fig. 8): freeze (the criteria's or
 * --freeze) or flush, cut, thaw, then copy. In the foreground the copy runs before the command
 * returns. In the background a detached `logdisk criteria copy` process does it after the
 * command returns: it asks the mount daemon to copy when the store is mounted (the copy then
 * runs in the daemon), or opens the store itself, waiting up to 60 s for its lock. Its output
 * goes to <store>/criteria.log; the outcome is recorded in criteria.json (criteria show).
 */
export async function snapshotByCriteria (storeArg: string, opts: { criteria: string, name?: string, id?: string, freeze?: string, json?: boolean }): Promise<void> {
  const { dir } = prepareStore(storeArg, 'write')
  const c = getCriteria(dir, opts.criteria)
  const freeze = opts.freeze ?? c.freeze ?? undefined
  const cut = await withFrozen(dir, freeze, frozen =>
    runOp<{ snapshot: SnapshotRecord, target: string }>(dir, 'criteriaSnapshot', { criteria: c.name, name: opts.name, id: opts.id === undefined ? undefined : Number(opts.id), frozen }))
  const snap = cut.snapshot
  if (c.background) {
    const log = fs.openSync(path.join(dir, CRITERIA_LOG), 'a')
    const child = spawn(process.execPath, [process.argv[1], 'criteria', 'copy', dir, c.name, snap.name], { detached: true, stdio: ['ignore', log, log] })
    fs.closeSync(log)
    child.unref()
    if (opts.json) return console.log(JSON.stringify({ snapshot: snap, target: cut.target, background: true, pid: child.pid }, null, 2))
    console.log(`snapshot ${snap.name}: sequence ${snap.seq}; copying to ${cut.target} in the background (pid ${child.pid}; logdisk criteria show ${storeArg} ${c.name} tells when it is done)`)
    return
  }
  const r = await copyWaiting(dir, c.name, snap.name)
  if (opts.json) return console.log(JSON.stringify({ snapshot: snap, target: cut.target, background: false, copy: r }, null, 2))
  console.log(`snapshot ${snap.name}: sequence ${snap.seq}, ${snap.frozen ? 'application-consistent (frozen)' : 'crash-consistent'}`)
  printCopy(r)
}

export function register (program: Command): void {
  const criteria = program.command('criteria').description('named snapshot criteria: recipes of block range, full or partial copy, background and target that snapshot --criteria runs')
  criteria.command('create <store> <name>')
    .description('create a criteria; run it with logdisk snapshot <store> --criteria <name>')
    .requiredOption('--target <pattern>', 'where copies go: a file path pattern with {name} {snapshot} {seq} {time}, or a block device')
    .option('--start-block <n>', 'first block of the range', '0')
    .option('--end-block <n>', 'last block of the range (default: the volume\'s last)')
    .option('--partial', 'copy only the blocks written since this criteria\'s previous run (default: full)')
    .option('--background', 'copy after the snapshot command returns')
    .option('--freeze <fs-mountpoint>', 'fsfreeze this filesystem around the cut')
    .option('--json', 'print the criteria as JSON')
    .action((storeArg: string, name: string, opts: { target: string, startBlock: string, endBlock?: string, partial?: boolean, background?: boolean, freeze?: string, json?: boolean }) => {
      const { dir } = prepareStore(storeArg, 'write')
      const c = createCriteria(dir, {
        name,
        target: path.resolve(opts.target),
        startBlock: blockNumber(opts.startBlock, '--start-block'),
        endBlock: blockNumber(opts.endBlock, '--end-block') ?? null,
        mode: opts.partial ? 'partial' : 'full',
        background: !!opts.background,
        freeze: opts.freeze ? path.resolve(opts.freeze) : null
      })
      if (opts.json) return console.log(JSON.stringify(c, null, 2))
      console.log(`created criteria ${c.name}: blocks ${range(c)}, ${c.mode}${c.background ? ', background' : ''}, target ${c.target}`)
    })
  criteria.command('delete <store> <name>')
    .description('delete a criteria (its snapshots and copies stay)')
    .option('--json', 'print {deleted: NAME}')
    .action((storeArg: string, name: string, opts: { json?: boolean }) => {
      const { dir } = prepareStore(storeArg, 'write')
      deleteCriteria(dir, name)
      if (opts.json) console.log(JSON.stringify({ deleted: name }, null, 2))
      else console.log(`deleted criteria ${name}`)
    })
  criteria.command('show <store> <name>')
    .description('show a criteria and its last run')
    .option('--json', 'print JSON (the criteria.json record, docs/STREAM.md)')
    .action((storeArg: string, name: string, opts: { json?: boolean }) => {
      const { dir } = prepareStore(storeArg, 'read')
      const c = getCriteria(dir, name)
      if (opts.json) return console.log(JSON.stringify(c, null, 2))
      for (const [k, v] of describe(c)) console.log(`${k.padEnd(11)} ${v}`)
    })
  tableOptions(criteria.command('list <store>')
    .description('list the criteria of a store: name, block range, mode, background, target, last run'), LIST_COLUMNS.map(c => c.name))
    .option('--json', 'print JSON')
    .action((storeArg: string, opts: TableOptions & { json?: boolean }) => {
      const columns = pickColumns('criteria list', LIST_COLUMNS, opts.output, ['name', 'blocks', 'mode', 'background', 'target', 'lastrun'])
      const { dir } = prepareStore(storeArg, 'read')
      const list = readCriteriaFile(dir)
      if (opts.json) return console.log(JSON.stringify(list, null, 2))
      printTable(columns, list, opts)
    })
  criteria.command('copy <store> <name> <snapshot>')
    .description('copy an existing snapshot by a criteria now (what a background run does; also retries a failed one)')
    .option('--json', 'print the result as JSON')
    .action(async (storeArg: string, name: string, snapshot: string, opts: { json?: boolean }) => {
      const dir = path.resolve(storeArg)
      const r = await copyWaiting(dir, name, snapshot)
      if (opts.json) return console.log(JSON.stringify(r, null, 2))
      printCopy(r)
    })
}
