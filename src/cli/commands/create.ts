import fs from 'node:fs'
import path from 'node:path'
import type { Command } from 'commander'
import { Store } from '../../store'
import { openStore } from '../../app/open'
import { formatBytes, parseSize } from '../units'
import { LogdiskError, isLogdiskError } from '../../errors'
import { CONFIG_FILE, SMALL_FILES_ROOM_BYTES } from '../../store/config'
import { recordIdentity } from '../../store/identity'
import { firstFileAbove } from '../store-access'
import { quietLogger } from '../on-store'
import { partialRunning, readPartial } from '../../replicate/partial'
import { absoluteTargetSpec, parseTarget } from '../../archive/parse-target'
import { createFromReplica } from '../../replicate/recover'
import { printJson, warn } from '../output'

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
  const parent = writableAbove(`cannot create a store at ${dir}`, st ? dir : path.dirname(dir))
  try {
    const s = fs.statfsSync(parent)
    if (s.bavail * s.bsize < SMALL_FILES_ROOM_BYTES) throw new LogdiskError('NO_SPACE', `cannot create a store at ${dir}: no space left on the filesystem of ${parent} (${formatBytes(s.bavail * s.bsize)} free)`)
  } catch (err) {
    if (err instanceof LogdiskError) throw err
  }
}

/** The nearest directory that exists at or above `dir` (where a new one is made): it must be writable. */
function writableAbove (what: string, dir: string): string {
  let parent = dir
  while (!fs.existsSync(parent) && path.dirname(parent) !== parent) parent = path.dirname(parent)
  try {
    fs.accessSync(parent, fs.constants.W_OK)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new LogdiskError('READ_ONLY', `${what}: ${parent} is ${code === 'EROFS' ? 'on a read-only filesystem' : `not writable by this user (${code})`}`, err)
  }
  return parent
}

/**
 * The --pool directories, checked before the store is made (a refusal after would leave a
 * store behind): outside the store, a directory or nothing yet, and where one can be made.
 */
function checkPoolDirs (dir: string, pools: string[]): void {
  for (const p of pools) {
    if (p === dir || p.startsWith(dir + path.sep)) throw new LogdiskError('BAD_ARGUMENT', `--pool ${p} is inside the store; give a directory outside it (nothing was created)`)
    let st: fs.Stats | undefined
    try { st = fs.statSync(p) } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOTDIR') throw new LogdiskError('BAD_ARGUMENT', `--pool ${p}: ${firstFileAbove(p)} is a file, not a directory (nothing was created)`, err)
      if (code !== 'ENOENT') throw new LogdiskError('READ_ONLY', `--pool ${p}: ${code} (nothing was created)`, err)
    }
    if (st && !st.isDirectory()) throw new LogdiskError('BAD_ARGUMENT', `--pool ${p} is a file; give a directory (nothing was created)`)
    writableAbove(`--pool ${p} (nothing was created)`, p)
  }
}

/** What is in each directory now (undefined: none there), so that a failed create can take back what it made. */
function namesIn (dirs: string[]): Map<string, Set<string> | undefined> {
  return new Map(dirs.map(d => [d, fs.existsSync(d) ? new Set(fs.readdirSync(d)) : undefined]))
}

/** Removes what was made since `namesIn`: the directories that were not there, the names new in those that were. */
function takeBack (before: Map<string, Set<string> | undefined>): void {
  for (const [dir, names] of before) {
    if (names === undefined) fs.rmSync(dir, { recursive: true, force: true })
    else for (const name of fs.existsSync(dir) ? fs.readdirSync(dir) : []) if (!names.has(name)) fs.rmSync(path.join(dir, name), { recursive: true, force: true })
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
    .option('--skip-damaged-manifest', 'with --from: recover from an older manifest when the newest is damaged (what it committed after is lost)')
    .option('--json', 'print {dir, uuid, sizeBytes, blockBytes, segmentBytes, pool}')
    .action(async (storeArg: string, opts: { size?: string, blockSize: string, segmentSize: string, pool: string[], from?: string, at?: string, skipDamagedManifest?: boolean, json?: boolean }) => {
      const dir = path.resolve(storeArg)
      if (opts.from !== undefined) {
        if (opts.size !== undefined || opts.pool.length > 0) throw new LogdiskError('BAD_ARGUMENT', 'create --from takes the size and geometry from the replica: leave out --size and --pool')
        // An unfinished create --from is started over by createFromReplica (one still running: BUSY).
        const unfinished = readPartial(dir)
        if (!unfinished) checkCreatable(dir)
        else if (!partialRunning(unfinished)) warn(`${dir} is an unfinished create --from ${unfinished.from} (pid ${unfinished.pid}, started ${unfinished.startedAt}); starting over`)
        opts.from = absoluteTargetSpec(opts.from) // a directory may be given relative, like every path (CLI.md)
        const target = parseTarget(opts.from, process.env, { role: 'replica' })
        try {
          const r = await createFromReplica(dir, target, { spec: opts.from, at: opts.at, skipDamagedManifest: opts.skipDamagedManifest === true, log: quietLogger })
          if (opts.json) printJson({ ...r, dir, from: opts.from })
          else console.log(`created ${dir} from ${opts.from} (${r.manifest}, generation ${r.generation}): ${r.segments} segments, ${formatBytes(r.bytes)} fetched, log up to sequence ${r.seq}${r.at ? ` (${r.at})` : ''}, in ${r.seconds.toFixed(1)} s${r.mode === 'lazy' ? `; ${r.remoteSegments} older segments stay on the replica, read on demand, and are fetched in the background while it is mounted` : ''}`)
        } finally {
          await target.close().catch(() => undefined)
        }
        return
      }
      if (opts.at !== undefined) throw new LogdiskError('BAD_ARGUMENT', '--at needs --from (to restore a store of your own to a point, use logdisk restore --at)')
      if (opts.skipDamagedManifest === true) throw new LogdiskError('BAD_ARGUMENT', '--skip-damaged-manifest needs --from')
      if (opts.size === undefined) throw new LogdiskError('BAD_ARGUMENT', 'create needs --size (like --size 8G), or --from <replica>')
      checkCreatable(dir)
      const pools = opts.pool.map(p => path.resolve(p))
      checkPoolDirs(dir, pools)
      const before = namesIn([dir, ...pools])
      const config = await Store.create(dir, {
        sizeBytes: parseSize(opts.size, '--size'),
        blockBytes: parseSize(opts.blockSize, '--block-size'),
        segmentBytes: parseSize(opts.segmentSize, '--segment-size')
      })
      recordIdentity(dir, config)
      if (pools.length > 0) {
        try {
          const { store, pool } = await openStore(dir, { holder: 'logdisk create' }, pools)
          // The volumes segment 0 went to were given by name: the user's, not taken by the pool
          // by itself from its spares (so no automatic shrink gives them back; the others stay spare).
          for (const v of pool.status().volumes) if (v.state === 'assigned' && pools.includes(path.resolve(v.dir))) pool.add(v.dir, undefined)
          await store.close()
        } catch (err) {
          // Refused past the checks above (a volume directory that could not be made, no room
          // for a segment): the store and the volumes it marked go again, so that create after
          // a fix just works; the message says so (its own advice, pool add, needs the store).
          takeBack(before)
          if (isLogdiskError(err, 'NO_SPACE')) throw new LogdiskError('NO_SPACE', `cannot create ${dir}: no --pool directory has room for a segment (${formatBytes(config.segmentBytes)}); nothing was created`, err)
          if (err instanceof LogdiskError) throw new LogdiskError(err.code, `${err.message} (nothing was created)`, err)
          throw err
        }
      }
      if (opts.json) return printJson({ dir, uuid: config.uuid, sizeBytes: config.sizeBytes, blockBytes: config.blockBytes, segmentBytes: config.segmentBytes, pool: pools })
      console.log(`created ${dir}: ${formatBytes(config.sizeBytes)}, block ${formatBytes(config.blockBytes)}, segment ${formatBytes(config.segmentBytes)}`)
    })
}
