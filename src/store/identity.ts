import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { LogdiskError } from '../errors'
import { formatBytes } from '../size-text'
import { CONFIG_FILE, readConfig, writeFileAtomic, type StoreConfig } from './config'
import { crc32c } from './crc'
import { readUpTo, type FileLayer } from './file-layer'
import { SEGMENT_MAGIC } from './format'
import { checkSegmentHeader, type SegmentGeometry } from './segment'

/**
 * Store identity: which directory is the store that owns a uuid.
 *
 * A store's uuid (store.json) names its segment headers, its directory on pool volumes and its
 * archived objects. `cp -a A B` makes a second directory with the same uuid; if both were
 * used, B would write into A's pool volumes and archive. So a store also records where it
 * lives, in identity.json: its real path and the device and inode of its directory, written
 * by every command that writes (never by read-only ones). On open:
 *
 *   recorded path is this path             -> itself (restored in place, or same path elsewhere)
 *   the recorded path holds another directory with the same uuid
 *                                          -> a copy of that store: read-only commands work,
 *                                             others are refused until `logdisk adopt`
 *   nothing of this uuid at the recorded path
 *                                          -> moved (mv, across filesystems, or restored from a
 *                                             backup while the original is gone): the record
 *                                             follows at the next command that writes
 *
 * The same record, kept by a store in the things it shares (its directory on each pool volume,
 * its archive target), catches what the store-level check cannot see: two copies moved away
 * before either was opened. The first one to write claims them; the other is refused.
 */
export const IDENTITY_FILE = 'identity.json'
/** Present while `logdisk adopt` rewrites a store's identity; removed when it is done. */
export const ADOPT_FILE = 'adopt.json'

/**
 * What adopt.json says (src/ops/adopt.ts writes it). `phase` 'staging': adopt copies what it
 * must write (segments taken home, archived objects under the new uuid) to places the store
 * does not read, so nothing of the store has changed and read-only commands work; 'committing'
 * (or absent: written before phases existed): the store itself is being rewritten (segment
 * headers, pool directories, baseline) and every command but adopt refuses it.
 */
export interface AdoptIntent {
  from: string
  to: string
  /** The store was a copy of another one (at `original`): its pool volumes are not its own. */
  copyOf: string | null
  startedAt: string
  phase?: 'staging' | 'committing'
  /** From adopt-short.json: when the adopt stopped for lack of room, how many more bytes it needs on the filesystem of `where`. */
  short?: { bytes: number, where: string }
}

/**
 * Beside adopt.json while an adopt is unfinished: how much more room it needs, when it stopped
 * for lack of it. Made (one block, padded) while there is room and rewritten in place, so that
 * it can still be written on a filesystem that has none left, which adopt.json (published by
 * rename, a new file) could not; a damaged one only loses that hint.
 */
export const ADOPT_SHORT_FILE = 'adopt-short.json'

/** adopt.json of the store at `dir` (with adopt-short.json's hint), or undefined when there is none; a damaged one is returned as {} (an adopt of unknown progress). */
export function readAdoptIntent (dir: string): Partial<AdoptIntent> | undefined {
  let text: string
  try {
    text = fs.readFileSync(path.join(dir, ADOPT_FILE), 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    return {}
  }
  let intent: Partial<AdoptIntent>
  try {
    const parsed = JSON.parse(text) as Partial<AdoptIntent>
    intent = typeof parsed === 'object' && parsed !== null ? parsed : {}
  } catch {
    intent = {}
  }
  try {
    const short = JSON.parse(fs.readFileSync(path.join(dir, ADOPT_SHORT_FILE), 'utf8')) as AdoptIntent['short'] | null
    if (short !== null && typeof short === 'object' && typeof short.bytes === 'number' && typeof short.where === 'string') intent = { ...intent, short }
  } catch { /* none, or damaged: no hint */ }
  return intent
}

/** Whether only read-only commands may open a store with this adopt unfinished: nothing of the store has changed yet. */
export function adoptLetsReadersIn (intent: Partial<AdoptIntent>): boolean {
  return intent.phase === 'staging'
}

/** ", and it needs 24.0 MiB more free on the filesystem of /x" when the adopt stopped for lack of room. */
function shortText (intent: Partial<AdoptIntent>): string {
  const s = intent.short
  return s !== undefined && typeof s.bytes === 'number' && s.bytes > 0 ? `; it stopped for lack of room and needs ${formatBytes(s.bytes)} more free on the filesystem of ${s.where}` : ''
}

/** The one line that refuses a store with an unfinished adopt (to every command; to writers only while it stages). */
export function adoptUnfinishedError (dir: string, intent: Partial<AdoptIntent>): LogdiskError {
  if (adoptLetsReadersIn(intent)) {
    return new LogdiskError('IDENTITY', `an adopt of ${dir} is unfinished (${ADOPT_FILE} is there${shortText(intent)}); nothing of the store has changed yet and read-only commands work, but it must be finished before anything writes: logdisk adopt ${dir}`)
  }
  return new LogdiskError('IDENTITY', `an adopt of ${dir} was interrupted (${ADOPT_FILE} is there${shortText(intent)}); finish it with: logdisk adopt ${dir}`)
}

/** The warning a read-only command gives on a store whose adopt is unfinished (staging). */
export function adoptUnfinishedWarning (dir: string, intent: Partial<AdoptIntent>): string {
  return `an adopt of ${dir} is unfinished (${ADOPT_FILE} is there${shortText(intent)}); read-only commands work, others are refused until it is finished with: logdisk adopt ${dir}`
}

export interface Location {
  /** Real path of the store directory (symlinks resolved). */
  path: string
  dev: number
  ino: number
  host: string
}

export interface IdentityRecord extends Location {
  format: 1
  uuid: string
  blockBytes: number
  segmentBytes: number
  recordedAt: string
  /** Where the store was recorded before it moved here (newest first, at most 4): see checkIdentity. */
  movedFrom?: Array<{ path: string, host: string }>
}

export type IdentityKind = 'self' | 'moved' | 'copy' | 'unrecorded'

export interface IdentityCheck {
  kind: IdentityKind
  here: Location
  record?: IdentityRecord
  /** For a copy: the path of the store it is a copy of. */
  original?: string
  /** A read-only check of a store whose adopt is unfinished but has not changed it yet (staging). */
  adopting?: Partial<AdoptIntent>
}

export function locationOf (dir: string): Location {
  const real = fs.realpathSync(dir)
  const st = fs.statSync(real)
  return { path: real, dev: st.dev, ino: st.ino, host: os.hostname() }
}

export function readIdentity (dir: string): IdentityRecord | undefined {
  let text: string
  try {
    text = fs.readFileSync(path.join(dir, IDENTITY_FILE), 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new LogdiskError('BAD_CONFIG', `cannot read ${path.join(dir, IDENTITY_FILE)}: ${(err as Error).message}`, err)
  }
  try {
    const r = JSON.parse(text) as IdentityRecord
    if (typeof r.uuid !== 'string' || typeof r.path !== 'string') throw new Error('fields missing')
    return r
  } catch (err) {
    throw new LogdiskError('BAD_CONFIG', `${path.join(dir, IDENTITY_FILE)} is damaged (${(err as Error).message}); delete it and the next command that writes records it again`, err)
  }
}

/** Records where the store lives now (write commands only). */
export function recordIdentity (dir: string, config: StoreConfig, here: Location = locationOf(dir), previous?: IdentityRecord): void {
  // A move keeps where the store was: a directory that holds this identity there again is the
  // original back (or a copy put there), and this one is then the copy (checkIdentity).
  const movedFrom = previous !== undefined && previous.uuid === config.uuid && (previous.path !== here.path || previous.host !== here.host)
    ? [{ path: previous.path, host: previous.host }, ...(previous.movedFrom ?? [])].slice(0, 4)
    : previous?.uuid === config.uuid ? previous.movedFrom : undefined
  const record: IdentityRecord = { format: 1, uuid: config.uuid, blockBytes: config.blockBytes, segmentBytes: config.segmentBytes, ...here, recordedAt: new Date().toISOString(), ...(movedFrom !== undefined && movedFrom.length > 0 ? { movedFrom } : {}) }
  writeFileAtomic(path.join(dir, IDENTITY_FILE), JSON.stringify(record, null, 2) + '\n')
}

/** Whether the store at `dir` has uuid `uuid` (false when there is no readable store there). */
export function holdsStore (dir: string, uuid: string): boolean {
  try {
    return readConfig(dir).uuid === uuid
  } catch {
    return false
  }
}

/**
 * What this directory is to the uuid in its store.json (see the top of this file). Throws
 * IDENTITY when store.json no longer matches what the store was made with (edited), or when
 * an adopt is unfinished: to every command once it has begun to rewrite the store, to those
 * that write only while it stages (`reading`: the caller writes nothing).
 */
export function checkIdentity (dir: string, config: StoreConfig, opts: { reading?: boolean } = {}): IdentityCheck {
  const adopting = readAdoptIntent(dir)
  if (adopting !== undefined && !(opts.reading === true && adoptLetsReadersIn(adopting))) throw adoptUnfinishedError(dir, adopting)
  const check = identityOf(dir, config)
  return adopting !== undefined ? { ...check, adopting } : check
}

function identityOf (dir: string, config: StoreConfig): IdentityCheck {
  const here = locationOf(dir)
  const record = readIdentity(dir)
  if (!record) return { kind: 'unrecorded', here }
  const file = path.join(dir, CONFIG_FILE)
  if (record.uuid !== config.uuid) {
    throw new LogdiskError('IDENTITY', `${file} says uuid ${config.uuid}, but this store is ${record.uuid} (its segments and ${IDENTITY_FILE} say so): ${CONFIG_FILE} was edited or copied in; put back "uuid": "${record.uuid}" (to give a copy its own identity, use logdisk adopt)`)
  }
  for (const key of ['blockBytes', 'segmentBytes'] as const) {
    if (record[key] !== config[key]) {
      throw new LogdiskError('IDENTITY', `${file} says ${key} ${config[key]}, but this store was made with ${record[key]}: ${CONFIG_FILE} was edited; put back "${key}": ${record[key]} (a store's geometry cannot change)`)
    }
  }
  // Moved here from a place that holds this identity again: the original came back (or a copy
  // was put there). Both would write the pool directories and archive they share, and one's
  // compaction would free what the other reads; taken for itself, this one kept the original's
  // pool directories, and the adopt the refusal advised took them away from it (a hostile
  // test, helper-62). This one moved, so it is the copy.
  for (const from of record.movedFrom ?? []) {
    if (from.host !== here.host || from.path === here.path || !holdsStore(from.path, config.uuid)) continue
    let other: fs.Stats | undefined
    try { other = fs.statSync(from.path) } catch { continue }
    if (other.ino !== here.ino || other.dev !== here.dev) return { kind: 'copy', here, record, original: from.path }
  }
  if (record.path === here.path) return { kind: 'self', here, record }
  // The recorded directory is still there with this uuid (and is not this one through another
  // path): this one is the copy. The recorded path wins even over a matching inode, so that
  // exactly one of two identical directories keeps the identity (mv A B; cp -a B A).
  if (record.host === here.host && holdsStore(record.path, config.uuid)) {
    let other: fs.Stats | undefined
    try { other = fs.statSync(record.path) } catch { /* gone meanwhile */ }
    if (other && (other.ino !== here.ino || other.dev !== here.dev)) return { kind: 'copy', here, record, original: record.path }
  }
  return { kind: 'moved', here, record }
}

/** The one line that refuses a write to a copy. */
export function copyError (dir: string, check: IdentityCheck): LogdiskError {
  return new LogdiskError('IDENTITY', `${dir} is a copy of the store at ${check.original} (same identity ${check.record?.uuid}); a copy must get its own identity before it is changed or mounted: logdisk adopt ${dir} (read-only commands work as is)`)
}

/** The owner record's file in a store's directory on a pool volume. */
export const OWNER_FILE = '.logdisk-owner.json'

/**
 * An owner record kept in something a store shares (its directory on a pool volume, its
 * archive target): which store directory has that uuid's claim on it.
 */
export interface OwnerRecord extends Location {
  uuid: string
  recordedAt: string
}

export function ownerRecord (uuid: string, here: Location): OwnerRecord {
  return { uuid, ...here, recordedAt: new Date().toISOString() }
}

/** The owner record in `segmentDir` (a store's directory on a pool volume); undefined when there is none or it cannot be read. */
export function readOwnerRecord (segmentDir: string): OwnerRecord | undefined {
  try { return JSON.parse(fs.readFileSync(path.join(segmentDir, OWNER_FILE), 'utf8')) as OwnerRecord } catch { return undefined }
}

/**
 * Whether `owner` (read from a shared place) lets the store at `here` use it: 'mine' (same
 * directory, maybe moved), 'free' (no record, or a record of a directory that no longer holds
 * this uuid: take it over), or the path of the other store directory that holds the claim.
 */
export function ownerVerdict (owner: OwnerRecord | undefined, here: Location, uuid: string): 'mine' | 'free' | { other: string } {
  if (!owner) return 'free'
  if (owner.path === here.path && owner.host === here.host) return 'mine'
  if (owner.dev === here.dev && owner.ino === here.ino && owner.host === here.host) return 'mine'
  // Another host's directory cannot be checked from here: the store moved hosts, or shares a
  // bucket with its replica; take it over.
  if (owner.host !== here.host) return 'free'
  if (!holdsStore(owner.path, uuid)) return 'free'
  try {
    const st = fs.statSync(owner.path)
    if (st.dev === here.dev && st.ino === here.ino) return 'mine'
  } catch { /* gone meanwhile */ }
  return { other: owner.path }
}

/**
 * Who else wrote to `segmentDir` (a store's directory on a pool volume, which copies of it
 * share) since `here` last did, by its owner record: undefined when nobody did (the record
 * names `here`, maybe moved; or one of this store's own former places, `ownPaths`: a backup of
 * the store restored under another name (helper-69's D1); or there is none: the store's own
 * segments/, an older store), else the other directory and whether a store with this uuid is
 * there now (`live`: a copy, or the original of this copy; not live: a copy since removed or
 * adopted).
 */
export function claimedByOther (segmentDir: string, here: Location, uuid: string, ownPaths: ReadonlyArray<{ path: string, host: string }>): { by: string, live: boolean } | undefined {
  const owner = readOwnerRecord(segmentDir)
  if (typeof owner?.path !== 'string') return undefined
  const verdict = ownerVerdict(owner, here, uuid)
  if (verdict === 'mine') return undefined
  if (typeof verdict === 'object') return { by: verdict.other, live: true }
  // 'free': no store with this uuid is there now, or it is on another host (not checkable):
  // one of this store's own former places, or another's (a copy used on another host of a
  // pool on shared storage: it was taken for this store's own, helper-70's D3).
  if (ownPaths.some(p => p.path === owner.path && p.host === owner.host)) return undefined
  return { by: owner.host !== here.host ? `${owner.host}:${owner.path}` : owner.path, live: false }
}

/** The places this store recorded itself at (identity.json: where, and where it moved from). */
export function ownPlaces (dir: string): Array<{ path: string, host: string }> {
  let r: IdentityRecord | undefined
  try { r = readIdentity(dir) } catch { return [] }
  return r === undefined ? [] : [{ path: r.path, host: r.host }, ...(r.movedFrom ?? [])]
}

/**
 * When the segment file `file` has an intact header (magic and checksum right) that says it is
 * not segment `id` of this store: one line saying what it is instead. Undefined when it is
 * ours, or when the header is damaged or short (then it may be this store's torn segment).
 */
export async function foreignSegment (layer: FileLayer, file: string, id: number, g: SegmentGeometry): Promise<string | undefined> {
  let h
  try { h = await layer.open(file, false) } catch { return undefined }
  const buf = Buffer.alloc(68)
  let n = 0
  try { n = await readUpTo(h, buf, 0) } catch { n = 0 } finally { await h.close().catch(() => undefined) }
  if (n < 68 || buf.toString('latin1', 0, 16) !== SEGMENT_MAGIC || buf.readUInt32LE(64) !== crc32c(buf.subarray(0, 64))) return undefined
  const problem = checkSegmentHeader(buf, id, g)
  if (!problem) return undefined
  const hex = buf.subarray(48, 64).toString('hex')
  const owner = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
  const what = owner !== g.uuid ? `belongs to store ${owner}, not to this store (${g.uuid})` : problem
  return `refusing to touch ${file}: its intact header says it ${what}; it is not a torn segment of this store (was store.json edited, or a file copied in?); nothing was moved`
}
