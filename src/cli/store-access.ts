import { refuseInterruptedClone } from '../clone/clone'
import { warn } from './output'
import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError } from '../errors'
import { formatBytes } from '../size-text'
import { SMALL_FILES_ROOM_BYTES, readConfig, type StoreConfig } from '../store/config'
import { adoptUnfinishedWarning, checkIdentity, copyError, type IdentityCheck } from '../store/identity'
import { readPartial, unfinishedError } from '../replicate/partial'
import type { Access } from '../app/open'
import { isAlive, readDaemonInfo } from '../daemon/paths'

const READ_ONLY_HINT = 'read-only commands (status, snapshots, log, diff, verify, restore, export, send, pool list) work as is'

const said = new Set<string>()

export interface PreparedStore {
  dir: string
  config: StoreConfig
  identity: IdentityCheck
  /** One line each, already printed on stderr as warnings: e.g. a read-only command on a copy. */
  warnings: string[]
}

function who (): string {
  const uid = process.getuid?.()
  if (uid === undefined) return 'this user'
  let name = String(uid)
  try {
    const line = fs.readFileSync('/etc/passwd', 'utf8').split('\n').find(l => l.split(':')[2] === String(uid))
    if (line) name = line.split(':')[0]
  } catch { /* no passwd file */ }
  return `user ${name}`
}

/**
 * Checks a store argument before a command touches anything, and says in one line what is
 * wrong: no such path, a file instead of a directory, no permission, not a store, store.json
 * edited, a copy that must be adopted before it is changed, no space left for a command that
 * writes. Nothing is written here.
 */
export function prepareStore (storeArg: string, access: Access, opts: { adopting?: boolean } = {}): PreparedStore {
  const dir = path.resolve(storeArg)
  refuseInterruptedClone(dir)
  let st: fs.Stats
  try {
    st = fs.statSync(dir)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') throw new LogdiskError('STORE_NOT_FOUND', `no store at ${dir}: no such directory (create one with: logdisk create ${dir} --size 1G)`, err)
    if (code === 'ENOTDIR') throw new LogdiskError('STORE_NOT_FOUND', `no store at ${dir}: ${firstFileAbove(dir)} is a file, not a directory`, err)
    if (code === 'EACCES' || code === 'EPERM') throw new LogdiskError('READ_ONLY', `cannot reach ${dir}: permission denied for ${who()}`, err)
    throw new LogdiskError('IO', `cannot reach ${dir}: ${code ?? (err as Error).message}`, err)
  }
  if (!st.isDirectory()) throw new LogdiskError('STORE_NOT_FOUND', `${dir} is a file, not a store (a store is a directory made by logdisk create)`)
  const partial = readPartial(dir)
  if (partial) throw unfinishedError(dir, partial)
  let config: StoreConfig
  try {
    config = readConfig(dir)
  } catch (err) {
    const code = ((err as LogdiskError).cause as NodeJS.ErrnoException | undefined)?.code
    if (code === 'EACCES' || code === 'EPERM') throw new LogdiskError('READ_ONLY', `cannot read the store at ${dir}: permission denied for ${who()}`, err)
    throw err
  }
  if (opts.adopting) {
    assertWritable(dir)
    return { dir, config, identity: { kind: 'unrecorded', here: { path: dir, dev: st.dev, ino: st.ino, host: '' } }, warnings: [] }
  }
  const identity = checkIdentity(dir, config, { reading: access === 'read' })
  const warnings: string[] = []
  if (identity.adopting !== undefined) {
    // Only a read gets here (checkIdentity refused the rest): the adopt has changed nothing yet.
    warnings.push(identity.kind === 'copy'
      ? `${dir} is a copy of the store at ${identity.original} (same identity) and ${adoptUnfinishedWarning(dir, identity.adopting)}`
      : adoptUnfinishedWarning(dir, identity.adopting))
  } else if (identity.kind === 'copy') {
    if (access === 'write') throw copyError(dir, identity)
    warnings.push(`${dir} is a copy of the store at ${identity.original} (same identity); read-only commands work, others are refused until: logdisk adopt ${dir}`)
  }
  if (access === 'write') assertWritable(dir)
  for (const w of warnings) {
    if (said.has(w)) continue // a command that runs several operations says it once
    said.add(w)
    warn(w)
  }
  return { dir, config, identity, warnings }
}

/** Refuses, in one line and before anything is written, a store this user cannot write or whose disk is full. */
export function assertWritable (dir: string, statfs: (p: string) => { bavail: number, bsize: number } = fs.statfsSync): void {
  for (const p of [dir, path.join(dir, 'index')]) {
    if (!fs.existsSync(p)) continue
    try {
      fs.accessSync(p, fs.constants.W_OK)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'EROFS') throw new LogdiskError('READ_ONLY', `${dir} is on a read-only filesystem: this command writes to the store; ${READ_ONLY_HINT}`, err)
      throw new LogdiskError('READ_ONLY', `${dir} is not writable by ${who()} (${code} on ${p}): this command writes to the store; run it as the store's owner; ${READ_ONLY_HINT}`, err)
    }
  }
  const freeNow = (): number | undefined => {
    try {
      const s = statfs(dir)
      return s.bavail * s.bsize
    } catch { return undefined } // unknown: let the writes say
  }
  let free = freeNow()
  if (free === undefined || free >= SMALL_FILES_ROOM_BYTES) return
  // <store>/cache holds archived segments fetched back for reads, thrown away at every open:
  // after a kill they stayed, and on a small filesystem they were what kept the store from
  // mounting again (helper-85). Removed here when no mount daemon of the store runs.
  const cache = path.join(dir, 'cache')
  const cached = bytesIn(cache)
  const daemon = readDaemonInfo(dir)
  let live = daemon !== undefined && path.resolve(daemon.store) === dir && daemon.pid !== process.pid && isAlive(daemon.pid) ? daemon.pid : undefined
  // A command that holds the unmounted store (holder.json) may be reading copies there too.
  if (live === undefined) live = liveHolder(dir)
  let note = ''
  if (cached > 0 && live === undefined) {
    for (const f of listDir(cache)) fs.rmSync(path.join(cache, f), { force: true })
    free = freeNow() ?? free
    if (free >= SMALL_FILES_ROOM_BYTES) {
      warn(`removed ${formatBytes(cached)} of archived segments fetched back into ${cache} by an earlier run (throwaway) to make room on its filesystem`)
      return
    }
  } else if (cached > 0) {
    note = ` (${cache} holds ${formatBytes(cached)} of archived segments fetched back by the running process ${live} that holds the store: they are removed when it is done or unmounts)`
  }
  throw new LogdiskError('NO_SPACE', `no space left on the filesystem of ${dir} (${formatBytes(free)} free; a command that writes needs at least ${SMALL_FILES_ROOM_BYTES / 1024 / 1024} MiB for the index and log)${note}: free some space and retry; ${READ_ONLY_HINT}`)
}

/** The pid of a live process other than this one that holder.json (store-open.ts, HOLDER_FILE) says holds the store. */
function liveHolder (dir: string): number | undefined {
  try {
    const { pid } = JSON.parse(fs.readFileSync(path.join(dir, 'holder.json'), 'utf8')) as { pid?: unknown }
    return typeof pid === 'number' && pid !== process.pid && isAlive(pid) ? pid : undefined
  } catch {
    return undefined
  }
}

function listDir (dir: string): string[] {
  try {
    return fs.readdirSync(dir)
  } catch {
    return []
  }
}

/** Bytes in the files of a flat directory (0 when it cannot be listed). */
function bytesIn (dir: string): number {
  let n = 0
  for (const f of listDir(dir)) {
    try { n += fs.statSync(path.join(dir, f)).size } catch { /* gone meanwhile */ }
  }
  return n
}

/** The first path component of `p` that is a file (for ENOTDIR messages). */
export function firstFileAbove (p: string): string {
  let cur = path.resolve(p)
  const chain: string[] = []
  while (path.dirname(cur) !== cur) { chain.unshift(cur); cur = path.dirname(cur) }
  for (const c of chain) {
    try {
      if (!fs.statSync(c).isDirectory()) return c
    } catch { break }
  }
  return path.dirname(p)
}
