import fs from 'node:fs'
import path from 'node:path'
import type { Command } from 'commander'
import { Store } from '../../store'
import { openStore } from '../../app/open'
import { formatBytes, parseSize } from '../units'
import { LogdiskError } from '../../errors'
import { CONFIG_FILE } from '../../store/config'
import { recordIdentity } from '../../store/identity'
import { MIN_FREE_BYTES, firstFileAbove } from '../store-access'
import { parseTarget } from '../../archive/parse-target'
import { createFromReplica } from '../../replicate/recover'
import { printJson } from '../output'

/** One line, before anything is made, for every reason `create` cannot make a store at `dir`. */
export function checkCreatable (dir: string): void {
  let st: fs.Stats | undefined
  try {
    st = fs.statSync(dir)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOTDIR') throw new LogdiskError('BAD_ARGUMENT', `cannot create a store at ${dir}: ${firstFileAbove(dir)} is a file, not a directory`, err)
    if (code !== 'ENOENT') throw new LogdiskError('READ_ONLY', `cannot create a store at ${dir}: ${code}`, err)
  }
  if (st && !st.isDirectory()) throw new LogdiskError('BAD_ARGUMENT', `cannot create a store at ${dir}: it is a file; give a new or empty directory`)
  if (st && fs.existsSync(path.join(dir, CONFIG_FILE))) throw new LogdiskError('STORE_EXISTS', `a store already exists at ${dir}`)
  // The nearest directory that exists is where the new one is made: it must be writable.
  let parent = st ? dir : path.dirname(dir)
  while (!fs.existsSync(parent) && path.dirname(parent) !== parent) parent = path.dirname(parent)
  try {
    fs.accessSync(parent, fs.constants.W_OK)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new LogdiskError('READ_ONLY', `cannot create a store at ${dir}: ${parent} is ${code === 'EROFS' ? 'on a read-only filesystem' : `not writable by this user (${code})`}`, err)
  }
  try {
    const s = fs.statfsSync(parent)
    if (s.bavail * s.bsize < MIN_FREE_BYTES) throw new LogdiskError('NO_SPACE', `cannot create a store at ${dir}: no space left on the filesystem of ${parent} (${formatBytes(s.bavail * s.bsize)} free)`)
  } catch (err) {
    if (err instanceof LogdiskError) throw err
  }
}

export function register (program: Command): void {
  program.command('create <store>')
    .description('create a store: a directory holding one virtual disk; with --from, rebuilt from a replica')
    .option('--size <size>', 'volume size, like 8G (required unless --from)')
    .option('--block-size <size>', 'block size', '4K')
    .option('--segment-size <size>', 'log segment size', '64M')
    .option('--pool <dir>', 'a pool volume directory for segments (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--from <replica>', 'rebuild the store from a replica (replicate.target of another store): s3://bucket/prefix or a directory')
    .option('--at <point>', 'with --from: the store as it was at a time, sequence, sync note or snapshot')
    .option('--json', 'print {dir, uuid, sizeBytes, blockBytes, segmentBytes, pool}')
    .action(async (storeArg: string, opts: { size?: string, blockSize: string, segmentSize: string, pool: string[], from?: string, at?: string, json?: boolean }) => {
      const dir = path.resolve(storeArg)
      if (opts.from !== undefined) {
        if (opts.size !== undefined || opts.pool.length > 0) throw new LogdiskError('BAD_ARGUMENT', 'create --from takes the size and geometry from the replica: leave out --size and --pool')
        checkCreatable(dir)
        const target = parseTarget(opts.from)
        try {
          const r = await createFromReplica(dir, target, { spec: opts.from, at: opts.at })
          if (opts.json) printJson({ ...r, dir, from: opts.from })
          else console.log(`created ${dir} from ${opts.from} (${r.manifest}, generation ${r.generation}): ${r.segments} segments, ${formatBytes(r.bytes)} fetched, log up to sequence ${r.seq}${r.at ? ` (${r.at})` : ''}, in ${r.seconds.toFixed(1)} s${r.mode === 'lazy' ? `; ${r.remoteSegments} older segments stay on the replica, read on demand, and are fetched in the background while it is mounted` : ''}`)
        } finally {
          await target.close().catch(() => undefined)
        }
        return
      }
      if (opts.at !== undefined) throw new LogdiskError('BAD_ARGUMENT', '--at needs --from (to restore a store of your own to a point, use logdisk restore --at)')
      if (opts.size === undefined) throw new LogdiskError('BAD_ARGUMENT', 'create needs --size (like --size 8G), or --from <replica>')
      checkCreatable(dir)
      const config = await Store.create(dir, {
        sizeBytes: parseSize(opts.size, '--size'),
        blockBytes: parseSize(opts.blockSize, '--block-size'),
        segmentBytes: parseSize(opts.segmentSize, '--segment-size')
      })
      recordIdentity(dir, config)
      if (opts.pool.length > 0) {
        const { store } = await openStore(dir, { holder: 'logdisk create' }, opts.pool.map(p => path.resolve(p)))
        await store.close()
      }
      if (opts.json) return printJson({ dir, uuid: config.uuid, sizeBytes: config.sizeBytes, blockBytes: config.blockBytes, segmentBytes: config.segmentBytes, pool: opts.pool.map(p => path.resolve(p)) })
      console.log(`created ${dir}: ${formatBytes(config.sizeBytes)}, block ${formatBytes(config.blockBytes)}, segment ${formatBytes(config.segmentBytes)}`)
    })
}
