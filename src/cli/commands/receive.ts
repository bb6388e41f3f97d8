import fs from 'node:fs'
import path from 'node:path'
import { pipeline } from 'node:stream/promises'
import type { Command } from 'commander'
import { LogdiskError, fromSystemError } from '../../errors'
import { Store } from '../../store'
import { CONFIG_FILE } from '../../store/config'
import { clearCreating, markCreating, unfinishedReceive, unfinishedReceiveText } from '../../copy/receive-marker'
import { readStreamHeader, validateStream } from '../../copy/stream-format'
import type { ReceiveResult } from '../../copy/receive'
import { runTracked } from '../progress'
import { parseSize } from '../units'
import { checkCreatable } from './create'
import { prepareStore } from '../store-access'
import { removeDeadSpools, spoolFile } from '../../copy/receive-spool'
import { reportError } from '../output'

/**
 * Copies the stream to this process's spool (receive-spool.ts). Ctrl-C (or SIGTERM) while the
 * stream is still being read ends the command with nothing applied and removes the spool: it
 * was left, as large as the stream had come, until a later receive removed it as dead.
 */
async function spool (input: string, dir: string): Promise<string> {
  const file = spoolFile(dir)
  const source = input === '-' ? process.stdin : fs.createReadStream(input)
  const onSignal = (): void => {
    fs.rmSync(file, { force: true })
    reportError(new LogdiskError('INTERRUPTED', `receive interrupted; the stream was still being read: nothing was applied to ${dir}, and its spool was removed`))
    process.exit(130)
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  try {
    await pipeline(source, fs.createWriteStream(file, { mode: 0o600 }))
  } catch (err) {
    fs.rmSync(file, { force: true })
    throw fromSystemError(err, `spool the stream to ${file}`)
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
  return file
}

export function register (program: Command): void {
  program.command('receive <store>')
    .description('apply a stream made by logdisk send and cut the same snapshot; a full stream into a missing store creates it')
    .requiredOption('--in <file|->', 'stream file, or - for standard input')
    .option('--force', 'overwrite writes made to the current volume since the base snapshot (or, for a full stream, anything in it)')
    .option('--segment-size <size>', 'log segment size of a store it creates (a stream does not carry the sender\'s; default 64M, as create)')
    .option('--json', 'print the result as JSON')
    .action(async (storeArg: string, opts: { in: string, force?: boolean, segmentSize?: string, json?: boolean }) => {
      const dir = path.resolve(storeArg)
      removeDeadSpools(dir)
      // An existing store is checked like any command that writes; a missing one is created.
      const exists = fs.existsSync(path.join(dir, CONFIG_FILE))
      if (exists && opts.segmentSize !== undefined) throw new LogdiskError('BAD_ARGUMENT', `--segment-size applies only to a store receive creates; ${dir} is a store already (nothing was changed)`)
      const segmentBytes = opts.segmentSize === undefined ? undefined : parseSize(opts.segmentSize, '--segment-size')
      if (exists) prepareStore(dir, 'write')
      else checkCreatable(dir)
      const unfinished = unfinishedReceive(dir)
      // Else: "not empty (N blocks written); a full stream needs an empty store", about blocks
      // the user never wrote (a hostile test, helper-53).
      if (unfinished && !opts.force) throw new LogdiskError('BAD_ARGUMENT', unfinishedReceiveText(dir, unfinished))
      let file = opts.in === '-' ? '-' : path.resolve(opts.in)
      let spooled: string | undefined
      if (file === '-' && process.stdin.isTTY) throw new LogdiskError('BAD_ARGUMENT', 'standard input is a terminal; pipe a stream into it (logdisk send ... --out - | logdisk receive ...) or give --in FILE')
      if (file === '-' || !fs.statSync(file, { throwIfNoEntry: false })?.isFile()) {
        if (file !== '-' && !fs.existsSync(file)) throw new LogdiskError('NOT_FOUND', `${file} does not exist`)
        spooled = file = await spool(file, dir)
      }
      let created: 'dir' | 'contents' | undefined
      try {
        if (!fs.existsSync(path.join(dir, CONFIG_FILE))) {
          const header = await readStreamHeader(file)
          if (header.from) {
            throw new LogdiskError('STORE_NOT_FOUND', `no store at ${dir}; this incremental stream (from ${header.from.name}) applies only to a store holding ${header.from.name}`)
          }
          await validateStream(file) // a bad stream creates nothing
          const existed = fs.existsSync(dir)
          await Store.create(dir, { sizeBytes: header.sizeBytes, blockBytes: header.blockBytes, ...(segmentBytes !== undefined ? { segmentBytes } : {}) })
          created = existed ? 'contents' : 'dir'
          markCreating(dir)
        }
        let r: ReceiveResult
        try {
          // spool: the process that applies it takes the spool over (receive-spool.ts claimSpool).
          r = await runTracked<ReceiveResult>(dir, 'receive', { file, force: !!opts.force, ...(spooled !== undefined ? { spool: true } : {}) }, 'receiving')
        } catch (err) {
          if (created === 'dir') fs.rmSync(dir, { recursive: true, force: true })
          else if (created === 'contents') for (const f of fs.readdirSync(dir)) fs.rmSync(path.join(dir, f), { recursive: true, force: true })
          throw err
        }
        clearCreating(dir)
        if (opts.json) return console.log(JSON.stringify({ ...r, created: !!created }, null, 2))
        const s = r.snapshot
        console.log(`received snapshot ${s.name}${r.from ? ` (incremental from ${r.from})` : ''} into ${dir}${created ? ' (created)' : ''}: ${r.dataBlocks} data blocks, ${r.zeroBlocks} zeroed blocks${r.rolledBack > 0 ? `; ${r.rolledBack} blocks written since the base rolled back (--force)` : ''}; volume id ${s.id ?? '-'}, sequence ${s.seq}`)
      } finally {
        if (spooled) fs.rmSync(spooled, { force: true })
      }
    })
}
