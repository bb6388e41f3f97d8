import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { LogdiskError } from '../errors'
import { historyKeepMs, readPolicy } from '../policy/policy'
import { Store, type OpenOptions } from '../store'
import { readConfig, type StoreConfig } from '../store/config'
import { silentLogger, type Logger } from '../store/logger'
import type { PolicyEngine } from '../policy/engine'
import { checkIdentity, copyError, foreignSegment, locationOf, recordIdentity } from '../store/identity'
import { makeIndexView, type IndexView } from '../store/index-view'
import { lockedError } from '../store/store-open'
import { nodeFileLayer } from '../store/file-layer'
import { parseSegmentFileName, segmentFileName } from '../store/format'
import { Pool } from '../pool/pool'
import { parseTarget } from '../archive/parse-target'
import { archiveLink } from '../archive/link'
import { storeArchiveLink } from '../archive/owned-link'
import { retainFrom } from '../replicate/gate'
import { readReplicaSource, replicaSourceLink } from '../replicate/source-link'
import type { ArchiveLink } from '../store/archive-link'
import { checkParent, parentHolds, readCloneRecord, recordParent, refuseInterruptedClone, registerClone } from '../clone/clone'
import type { ReplicationManager } from '../replicate/manager'

/**
 * The composition root: the one place that assembles a store with the parts around it (its
 * pool as the home of its segments, its archive target, its policy's history window). The
 * store, the pool, the archive and the policy know nothing of each other's construction;
 * the CLI, the daemon and the tests open stores through here.
 */

/**
 * How a command opens a store. 'write': under the store's lock, as the owner of its identity
 * (a copy is refused: identity.ts), recording where it lives. 'read': nothing in the store or
 * its pool volumes is written (no holder file, no pool.json, no index writes, no recovery
 * cuts): the index is read through a private view (index-view.ts) in a temporary directory,
 * which is removed when the store closes. Read opens work on a store the user may only read
 * and on a full disk.
 */
export type Access = 'read' | 'write'

/** Errors of openStore that are about a clone's parent, not the clone (see isParentError). */
const parentErrors = new WeakSet<Error>()

/**
 * Whether openStore failed because a clone's parent could not be opened: a caller that words
 * its own refusal (promote: "<clone> is mounted") must not say it of the clone (helper-72).
 */
export function isParentError (err: unknown): boolean {
  return err instanceof Error && parentErrors.has(err)
}

/**
 * Opens a store with its pool as the home of its segments: what the CLI and the mount daemon
 * use. (Store.open alone serves library users whose stores have no external volumes.)
 */
export async function openStore (dir: string, opts: Omit<OpenOptions, 'home' | 'readOnly'> = {}, initialPoolDirs: string[] = [], access: Access = 'write'): Promise<{ store: Store, pool: Pool }> {
  return await openChain(path.resolve(dir), opts, initialPoolDirs, access, [])
}

/** How many clones deep a chain of clones may go (a clone of a clone of ...): a loop made by hand stops here. */
const MAX_CLONE_DEPTH = 32

async function openChain (dir: string, opts: Omit<OpenOptions, 'home' | 'readOnly'>, initialPoolDirs: string[], access: Access, below: string[]): Promise<{ store: Store, pool: Pool }> {
  refuseInterruptedClone(dir)
  const clone = readCloneRecord(dir)
  if (!clone) return await openOwn(dir, opts, initialPoolDirs, access)
  // A clone (src/clone): its parent's snapshot is opened for reading, for the reads that fall
  // through. The parent is opened the same clone-aware way: a clone of a clone reads, through
  // its parent, the grandparent's blocks its parent never wrote (helper-84: it read zeros).
  let parent: Store
  try {
    const chain = [...below, dir]
    if (chain.includes(path.resolve(clone.parent)) || chain.length > MAX_CLONE_DEPTH) {
      throw new LogdiskError('BAD_CONFIG', `its chain of clones ${[...chain, path.resolve(clone.parent)].join(' -> ')} loops or is deeper than ${MAX_CLONE_DEPTH}`)
    }
    parent = (await openChain(path.resolve(clone.parent), {}, [], 'read', chain)).store
  } catch (err) {
    const why = err instanceof LogdiskError && err.code === 'STORE_LOCKED' ? 'it is mounted or in use (a clone reads its parent\'s snapshot directly: unmount the parent first)' : (err as Error).message
    const e = new LogdiskError(err instanceof LogdiskError ? err.code : 'IO', `${dir} is a clone of snapshot ${clone.snapshot} of ${clone.parent}, which cannot be opened: ${why}`, err)
    parentErrors.add(e)
    throw e
  }
  try {
    const fallThrough = checkParent(dir, clone, parent)
    const opened = await openOwn(dir, { ...opts, fallThrough, fallThroughHolds: parentHolds(clone, parent) }, initialPoolDirs, access)
    recordParent(opened.store, clone, parent)
    if (access === 'write') {
      try {
        registerClone(clone.parent, dir, opened.store.config.uuid, clone.snapshot)
      } catch (err) {
        (opts.logger ?? silentLogger).warn({ parent: clone.parent, err: (err as Error).message }, 'cannot record this clone in its parent\'s clones.json: a delete of its snapshot there is not refused')
      }
    }
    const close = opened.store.close.bind(opened.store)
    opened.store.close = async () => {
      try { await close() } finally { await parent.close() }
    }
    return opened
  } catch (err) {
    await parent.close()
    throw err
  }
}

async function openOwn (dir: string, opts: Omit<OpenOptions, 'home' | 'readOnly'>, initialPoolDirs: string[], access: Access): Promise<{ store: Store, pool: Pool }> {
  const config = readConfig(dir)
  const identity = checkIdentity(dir, config, { reading: access === 'read' })
  const policy = readPolicy(dir)
  const log = opts.logger ?? silentLogger
  const target = policy['archive.target']
  if (access === 'read') {
    const scratch = makeScratchDir()
    try {
      const view = privateIndexView(dir, scratch, err => lockedError(dir, err))
      const pool = Pool.open(dir, config, policy, log, [], { readOnly: { scratchDir: scratch }, here: identity.here })
      await preflightSegments(pool, config)
      const archive = withReplicaSource(dir, target === '' ? undefined : archiveLink(parseTarget(target), config.uuid))
      const store = await Store.open(dir, { historyKeepMs: historyKeepMs(policy), ...opts, home: pool, archive, readOnly: { indexDir: view.dir, scratchDir: scratch } })
      pool.attach(store)
      const close = store.close.bind(store)
      store.close = async () => {
        try {
          await close()
        } finally {
          fs.rmSync(scratch, { recursive: true, force: true })
        }
      }
      return { store, pool }
    } catch (err) {
      fs.rmSync(scratch, { recursive: true, force: true })
      throw explainOpenError(dir, err, 'read', path.join(scratch, 'index'))
    }
  }
  if (identity.kind === 'copy') throw copyError(dir, identity)
  let store: Store
  let pool: Pool
  try {
    pool = Pool.open(dir, config, policy, log, initialPoolDirs, { here: identity.here })
    await preflightSegments(pool, config)
    const archive = withReplicaSource(dir, target === '' ? undefined : storeArchiveLink(parseTarget(target), config, identity.here))
    // Replication: passes leave alone what is not on the replica yet (src/replicate/gate.ts).
    store = await Store.open(dir, { historyKeepMs: historyKeepMs(policy), retainFrom: retainFrom(dir), ...opts, home: pool, archive })
  } catch (err) {
    throw explainOpenError(dir, err, 'write')
  }
  pool.attach(store)
  // Under the lock: the record follows a moved store, and a store made before records existed gets one.
  const r = identity.record
  if (!r || r.path !== identity.here.path || r.dev !== identity.here.dev || r.ino !== identity.here.ino || r.host !== identity.here.host) {
    try {
      recordIdentity(dir, config, identity.here, r)
    } catch (err) {
      await store.close()
      throw explainOpenError(dir, err, 'write')
    }
  }
  return { store, pool }
}

/** A store recovered lazily reads its older segments from the replica (src/replicate/source-link.ts). */
function withReplicaSource (dir: string, own: ArchiveLink | undefined): ArchiveLink | undefined {
  const source = readReplicaSource(dir)
  return source ? replicaSourceLink(source, own) : own
}

/**
 * Before the index is opened (LevelDB writes on open): the newest segment file on each volume
 * must be this store's. A store.json edited to another uuid or geometry, or a stray segment of
 * another store, is refused here with nothing touched; recovery checks every file it would move.
 */
async function preflightSegments (pool: Pool, config: StoreConfig): Promise<void> {
  const g = { uuid: config.uuid, blockBytes: config.blockBytes, segmentBytes: config.segmentBytes }
  for (const volume of pool.volumes()) {
    const dir = pool.dirOf(volume)
    let names: string[]
    try { names = fs.readdirSync(dir) } catch { continue }
    let newest: number | undefined
    for (const n of names) {
      const id = parseSegmentFileName(n)
      if (id !== undefined && (newest === undefined || id > newest)) newest = id
    }
    if (newest === undefined) continue
    const foreign = await foreignSegment(nodeFileLayer, path.join(dir, segmentFileName(newest)), newest, g)
    if (foreign) throw new LogdiskError('IDENTITY', foreign)
  }
}

/** The pool a store was opened with, when it was opened through openStore. */
export function poolOf (store: Store): Pool | undefined {
  return store.home instanceof Pool ? store.home : undefined
}

/**
 * A read-only view of `dir`'s index in `scratch` (index-view.ts: nothing of the store is
 * written); `locked` words the refusal when the store is in use.
 */
export function privateIndexView (dir: string, scratch: string, locked: (err: LogdiskError) => LogdiskError): IndexView {
  try {
    return makeIndexView(path.join(dir, 'index'), path.join(scratch, 'index'))
  } catch (err) {
    if (err instanceof LogdiskError && err.code === 'STORE_LOCKED') throw locked(err)
    throw err
  }
}

/** A private temporary directory: the temp dir, else /dev/shm (a full disk may hold both). */
export function makeScratchDir (): string {
  for (const base of [os.tmpdir(), '/dev/shm']) {
    try {
      return fs.mkdtempSync(path.join(base, 'logdisk-ro-'))
    } catch { /* try the next */ }
  }
  throw new LogdiskError('NO_SPACE', `cannot make a temporary directory in ${os.tmpdir()} or /dev/shm for a read-only open of the index`)
}


/** One line for what the operating system said while opening, in the store's terms. */
function explainOpenError (dir: string, err: unknown, access: Access, viewDir?: string): unknown {
  // A read-only open reads a private view of the index (index-view.ts), and LevelDB's words
  // name that temporary copy, gone by now: the user's index is the store's (helper-64).
  const said = (err as Error)?.message ?? ''
  const text = viewDir === undefined ? said : said.split(viewDir).join(path.join(dir, 'index'))
  const same = (e: LogdiskError): LogdiskError => text === said ? e : new LogdiskError(e.code, text, e)
  if (err instanceof LogdiskError && err.code !== 'IO' && err.code !== 'READ_ONLY') return same(err)
  // LevelDB's own words named no way out, or a read-only open's temporary copy (helper-62).
  // The log holds everything the index does (FORMAT.md "The index").
  const level = (err as { code?: unknown, cause?: { code?: unknown } })
  if (level?.code === 'LEVEL_CORRUPTION' || level?.cause?.code === 'LEVEL_CORRUPTION' || /Corruption:|LEVEL_CORRUPTION/.test(text)) {
    return new LogdiskError('CORRUPT', `${dir}: its index (LevelDB) is damaged (${text.replace(/\s+/g, ' ').slice(0, 160)}); the log holds everything in it: move ${path.join(dir, 'index')} aside and run the command again to rebuild it from the log`, err)
  }
  if (err instanceof LogdiskError && /^cannot open the index at /.test(text)) {
    const detail = text.replace(/^cannot open the index at \S+: /, '').replace(/\s+/g, ' ').slice(0, 160)
    return new LogdiskError(err.code, `${dir}: cannot open its index (${detail}); if it is damaged (a garbled CURRENT or MANIFEST), move ${path.join(dir, 'index')} aside and run the command again to rebuild it from the log`, err)
  }
  if (access === 'read') {
    if (err instanceof LogdiskError) return same(err)
    const sys = err as NodeJS.ErrnoException
    return new LogdiskError(sys?.code === 'EACCES' ? 'READ_ONLY' : 'IO', `${dir}: ${sys?.code ?? ''} ${text}`.trim(), err)
  }
  if (/No space left on device|ENOSPC/.test(text)) {
    return new LogdiskError('NO_SPACE', `${dir}: no space left on the device holding it (opening the store for writing needs some); free space and retry (read-only commands such as status and verify work as is)`, err)
  }
  if (/Read-only file system|EROFS|its filesystem is read-only/.test(text)) {
    return new LogdiskError('READ_ONLY', `${dir}: a filesystem it writes to is read-only (${text.replace(/\s+/g, ' ').slice(0, 160)}); make it writable again (read-only commands such as status and verify work as is)`, err)
  }
  if (/Permission denied|EACCES|EPERM/.test(text)) {
    return new LogdiskError('READ_ONLY', `${dir}: not writable by this user (${text.replace(/\s+/g, ' ').slice(0, 160)}); run the command as the store's owner (read-only commands such as status and verify work as is)`, err)
  }
  if (err instanceof LogdiskError) return err
  const sys = err as NodeJS.ErrnoException
  return new LogdiskError('IO', `${dir}: ${sys?.code ?? ''} ${text}`.trim(), err)
}

/**
 * The policy engine of a mounted store: applies `<store>/policy.json`, re-read on every tick,
 * to the store, its pool and its replication. `inUse` says whether a snapshot's image is open
 * (retention leaves those alone).
 */
export function policyEngineFor (store: Store, pool: Pool, log: Logger, inUse: (name: string) => boolean, replication?: ReplicationManager): PolicyEngine {
  const linkFor = (target: string): ArchiveLink | undefined => withReplicaSource(store.dir, target === '' ? undefined : storeArchiveLink(parseTarget(target), store.config, locationOf(store.dir)))
  // Required here, not at the top: only the mount daemon runs policies, and the engine's
  // imports (clone and replica guards) would slow every CLI command's start-up.
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { PolicyEngine } = require('../policy/engine') as typeof import('../policy/engine')
  return new PolicyEngine(store, pool, log, Date.now, () => readPolicy(store.dir), inUse, replication, linkFor)
}
