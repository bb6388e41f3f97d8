import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError, isLogdiskError } from '../errors'
import { clonesReadingFrom, forgetOthersClones, readCloneRecord, registerClone } from '../clone/clone'
import { archiveLink, archiveObjectName } from '../archive/link'
import { DirTarget } from '../archive/dir'
import { makeScratchDir, privateIndexView } from '../app/open'
import { parseTarget } from '../archive/parse-target'
import { readPolicy, writePolicy } from '../policy/policy'
import { OWNER_FILE, type PoolFile } from '../pool/pool'
import { readMarker, reassign } from '../pool/volume-marker'
import { baselineFiles, readBaselineIndex, writeBaselineIndex } from '../store/baseline'
import { originsFile } from '../store/baseline-origins'
import { SMALL_FILES_ROOM_BYTES, readConfig, writeConfig, writeFileAtomic } from '../store/config'
import { firstIntactCopy } from './intact-copy'
import { crc32c } from '../store/crc'
import { nodeFileLayer } from '../store/file-layer'
import { SEGMENT_HEADER_BYTES, SEGMENT_MAGIC, parseSegmentFileName, segmentFileName } from '../store/format'
import { ADOPT_FILE, ADOPT_SHORT_FILE, checkIdentity, foreignSegment, locationOf, ownerRecord, ownerVerdict, readOwnerRecord, recordIdentity, type AdoptIntent, type Location } from '../store/identity'
import { IndexBatch, IndexDb, type SegmentRecord } from '../store/index-db'
import { formatBytes } from '../size-text'
import { RoomNeeds, allocatedBytes, isNoSpace, moreBytes, ranOutError, roomRefusal, type RoomShort } from './adopt-room'
import { dropBlockMap } from '../store/block-map-file'
import { LOCAL_VOLUME, POOL_FILE } from '../store/segment-home'

/**
 * `logdisk adopt <store>`: gives a store a new identity (a new uuid), as ZFS's `zpool reguid`
 * does. Made for copies (`cp -a A B`: B has A's uuid and is refused for anything that writes
 * until adopted), it works on any unmounted store. What carries the uuid is rewritten:
 *
 *   segment headers         bytes 48-64 and the header CRC, in place, each file fsynced
 *   baseline.idx            re-encoded under the new uuid (atomic publish)
 *   pool volumes            the store's own directory <volume>/<old uuid> is renamed to
 *                           <volume>/<new uuid> and the marker reassigned; a copy's volumes are
 *                           the original's: the copy's segments on them are copied into the
 *                           copy's own segments/ (headers rewritten), the original's files are
 *                           only read, and volumes assigned to the original leave the copy's pool
 *   archive                 objects are named by uuid: every archived segment of this store is
 *                           fetched, its header rewritten, and put under the new name; the old
 *                           objects stay (they are the original's, or shared with a copy)
 *   store.json, identity    the new uuid, and this directory as its home
 *
 * Room first: before anything is written, what adopt must write is added up by filesystem
 * (segments taken home, archived objects put under the new uuid when the archive is a
 * directory, the re-encoded baseline index, headroom for the index and small files:
 * adopt-room.ts), and adopt refuses with NO_SPACE, naming the room needed and free, when a
 * filesystem lacks it. (It failed midway with ENOSPC, and the store was refused to every
 * command until room was freed, without a word on how much: a hostile test.)
 *
 * Crash-safe and resumable, in two phases recorded in adopt.json with the old and new uuid:
 *
 *   staging      what takes room is written where the store does not read it: segments
 *                copied home as seg-N.log.adopt-staged, archived objects under the new uuid.
 *                Nothing of the store has changed: read-only commands work, others are
 *                refused. Room that goes meanwhile (another program) stops adopt with how much
 *                more it needs; running it again goes on where it stopped.
 *   committing   entered only with room for the rest; the store is rewritten (staged segments
 *                renamed in, headers, pool directories, baseline, store.json) and every command
 *                but adopt refuses it, since its segments name both identities until it is done.
 *
 * Each step accepts work already done, so running adopt again after a crash finishes the job.
 * The store's lock is held throughout.
 */
export type { AdoptIntent } from '../store/identity'

export interface AdoptResult {
  from: string
  to: string
  copyOf: string | null
  segmentsRewritten: number
  segmentsCopiedIn: number
  volumesRenamed: string[]
  volumesDropped: string[]
  /** The store's own segments/ had no capacity (create --pool) and is now its only volume: it takes segments again. */
  internalCapacityRestored?: boolean
  /** A copy's policy asked for more mirror copies than the volumes left in its pool: lowered to that. */
  mirrorLowered?: { from: number, to: number }
  archivedCopied: number
  baseline: boolean
}

/** Where a segment copied home waits, whole and fsynced, until the commit renames it in (the store never reads it there). */
const STAGED_SUFFIX = '.adopt-staged'
/** A staged copy being written. */
const STAGING_SUFFIX = '.adopt-tmp'
/** What an older adopt named the file it was copying (partial by definition when left). */
const OLD_TMP_SUFFIX = '.adopt'

/** One of this store's segments on a pool volume that is not its own, to be copied home. */
interface HomeCopy {
  id: number
  /** Its files on the volumes that hold it (the first volume's first): the first intact one is copied. */
  sources: string[]
  dst: string
  staged: string
  bytes: number
}

export async function adoptStore (dir: string, log: (line: string) => void = () => {}): Promise<AdoptResult> {
  dir = path.resolve(dir)
  const config = readConfig(dir)
  const intentFile = path.join(dir, ADOPT_FILE)
  // Before the index is opened (LevelDB writes when it opens): an edited store.json is refused
  // here, and so is a segment header that names a store other than this one.
  const identity = fs.existsSync(intentFile) ? undefined : checkIdentity(dir, config)
  if (identity) {
    for (const name of fs.readdirSync(path.join(dir, 'segments')).filter(n => parseSegmentFileName(n) !== undefined)) {
      const file = path.join(dir, 'segments', name)
      const foreign = await foreignSegment(nodeFileLayer, file, parseSegmentFileName(name)!, { uuid: config.uuid, blockBytes: config.blockBytes, segmentBytes: config.segmentBytes })
      if (foreign) throw new LogdiskError('IDENTITY', foreign)
    }
  }
  let intent: AdoptIntent | undefined
  if (!identity) {
    try {
      intent = JSON.parse(fs.readFileSync(intentFile, 'utf8')) as AdoptIntent
    } catch (err) {
      throw new LogdiskError('BAD_CONFIG', `${intentFile} is damaged (${(err as Error).message}); it records the new identity of an adopt under way: put back a good copy to go on`, err)
    }
    if (config.uuid !== intent.from && config.uuid !== intent.to) {
      throw new LogdiskError('IDENTITY', `${intentFile} is about uuid ${intent.from} -> ${intent.to}, but store.json says ${config.uuid}; it does not belong to this store (move it away to go on)`)
    }
  } else {
    // Clones read through to their parent by its uuid: a new one would cut them off for good
    // (a hostile test, helper-53: the parent adopted, its clone failed to open and the
    // delete guard no longer saw it). A copy's clones.json names its original's clones,
    // which read from the original: not this store's.
    const clones = clonesReadingFrom(dir)
    if (clones.length > 0) {
      throw new LogdiskError('BUSY', `${dir} has clone${clones.length > 1 ? 's' : ''} ${clones.join(', ')} that read${clones.length > 1 ? '' : 's'} through to it by its identity; a new identity would cut ${clones.length > 1 ? 'them' : 'it'} off: promote ${clones.length > 1 ? 'them' : 'it'} first (logdisk promote <clone>); nothing was changed`)
    }
  }
  const here = locationOf(dir)
  const internal = path.join(dir, 'segments')
  const from = intent?.from ?? config.uuid
  const copyOf = intent !== undefined ? intent.copyOf : identity?.kind === 'copy' ? identity.original! : null
  const resuming = intent === undefined ? undefined : intent.phase === 'staging' ? 'staging' : 'committing'

  // Up front, with nothing written (the index is read through a private view: LevelDB writes
  // when it opens): what adopt will write, and whether each filesystem has room for it.
  const planned = await roomFor(dir, await segmentRecordsReadOnly(dir), { from, to: intent?.to, copyOf, phase: intent?.phase }, here)
  // (adopt.json is not touched here: without the lock, a running adopt may be rewriting it.)
  const short = planned.shortfall()
  if (short) throw roomRefusal(dir, short, resuming)

  let index: IndexDb
  try {
    index = await IndexDb.open(path.join(dir, 'index'))
  } catch (err) {
    if (isLogdiskError(err, 'STORE_LOCKED')) throw lockedError(dir, err)
    throw err
  }
  try {
    if (intent) {
      log(`resuming an interrupted adopt: ${intent.from} -> ${intent.to}`)
    } else {
      intent = { from, to: crypto.randomUUID(), copyOf, startedAt: new Date().toISOString(), phase: 'staging' }
      writeFileAtomic(intentFile, JSON.stringify(intent, null, 2) + '\n')
    }
    recordShort(dir, undefined) // it has the room (checked above); made now, while it has
    fs.mkdirSync(internal, { recursive: true })
    removeHalfCopies(internal)
    const records = await index.segments()
    const pool = readPoolFile(dir)
    const external = (pool?.volumes ?? []).filter(v => !v.internal)
    const result: AdoptResult = { from: intent.from, to: intent.to, copyOf: intent.copyOf, segmentsRewritten: 0, segmentsCopiedIn: 0, volumesRenamed: [], volumesDropped: [], archivedCopied: 0, baseline: false }

    if (intent.phase === 'staging') {
      // What takes room goes first, to places the store does not read: segments staged beside
      // their final names, archived objects under the new uuid. A lack of room here (another
      // program took it) leaves the store as it was: read-only commands still work on it.
      const staging = intent
      const stoppedForRoom = async (err: unknown, doing: string): Promise<never> => {
        if (!isNoSpace(err)) throw err
        const left = await roomFor(dir, records, staging, here)
        const s = left.shortfall() ?? left.on(internal) ?? { where: dir, needBytes: 0, freeBytes: 0, parts: [] }
        recordShort(dir, s)
        throw ranOutError(dir, doing, s, false, err)
      }
      const copies = homeCopies(records, external, staging, here, internal)
      const end = await index.cleanClose()
      for (const copy of copies.values()) {
        if (fs.existsSync(copy.dst) || fs.existsSync(copy.staged)) continue
        try {
          await stageHomeCopy(copy, config.blockBytes, ownBytes(copy.id, end, config.segmentBytes))
        } catch (err) {
          await stoppedForRoom(err, 'copied segments home from the original\'s pool volumes')
        }
        log(`segment ${copy.id} copied home (${formatBytes(copy.bytes)})`)
      }
      if (copies.size > 0) syncDir(internal)
      try {
        result.archivedCopied = await copyArchived(dir, records, staging, here, log)
      } catch (err) {
        await stoppedForRoom(err, 'copied archived segments under the new identity')
      }
      // The store is rewritten from here on, and refused to every other command until it is
      // done: only with room for the rest (its index, baseline and small files).
      const rest = await roomFor(dir, records, { ...staging, phase: 'committing' }, here)
      const restShort = rest.shortfall()
      if (restShort) {
        recordShort(dir, restShort)
        throw ranOutError(dir, 'copied what it needs before it rewrites the store', restShort, false, undefined)
      }
      const committing: AdoptIntent = { from: staging.from, to: staging.to, copyOf: staging.copyOf, startedAt: staging.startedAt, phase: 'committing' }
      try {
        writeFileAtomic(intentFile, JSON.stringify(committing, null, 2) + '\n')
      } catch (err) {
        await stoppedForRoom(err, 'recorded that it rewrites the store')
      }
      intent = committing
    }

    try {
      await commit(dir, index, records, intent, result, log)
    } catch (err) {
      if (!isNoSpace(err)) throw err
      const left = await roomFor(dir, records, intent, here).catch(() => undefined)
      const s = left?.shortfall() ?? left?.on(dir) ?? { where: dir, needBytes: 0, freeBytes: 0, parts: [] }
      recordShort(dir, s)
      throw ranOutError(dir, 'rewrote the store under its new identity', s, true, err)
    }
    return result
  } finally {
    await index.close()
  }
}

/**
 * The rewrite of the store under the new identity (adopt.json says 'committing', or was
 * written before phases: then segments not staged yet are copied home here, and the archive
 * too). Every step accepts work already done.
 */
async function commit (dir: string, index: IndexDb, records: Map<number, SegmentRecord>, intent: AdoptIntent, result: AdoptResult, log: (line: string) => void): Promise<void> {
  const config = readConfig(dir)
  const intentFile = path.join(dir, ADOPT_FILE)
  const here = locationOf(dir)
  const internal = path.join(dir, 'segments')
  const batch = new IndexBatch()
  // The index changes here without an open of the store: a saved block map goes first.
  await dropBlockMap(nodeFileLayer, path.join(dir, 'index'))

  // Pool volumes: the store's own directory follows the uuid; a copy takes its segments home.
  const poolFile = path.join(dir, POOL_FILE)
  const pool = readPoolFile(dir)
  const external = (pool?.volumes ?? []).filter(v => !v.internal)
  const copies = homeCopies(records, external, intent, here, internal)
  const dropped = new Set<string>()
  for (const v of external) {
    let marker
    try { marker = readMarker(v.dir) } catch { marker = undefined }
    if (ownsVolume(v, intent, here)) {
      const fromDir = path.join(v.dir, intent.from)
      const toDir = path.join(v.dir, intent.to)
      if (fs.existsSync(fromDir) && !fs.existsSync(toDir)) {
        fs.renameSync(fromDir, toDir)
        syncDir(v.dir)
      }
      if (fs.existsSync(toDir)) writeFileAtomic(path.join(toDir, OWNER_FILE), JSON.stringify(ownerRecord(intent.to, here), null, 2) + '\n')
      if (marker) reassign(v.dir, intent.from, intent.to)
      result.volumesRenamed.push(v.dir)
      continue
    }
    // The original's volume: this store's segments on it come home into segments/, read only there.
    if (!v.id) continue
    for (const [id, r] of records) {
      if (!(r.volumes ?? []).includes(v.id)) continue
      const copy = copies.get(id)
      if (copy !== undefined && !fs.existsSync(copy.dst)) {
        if (!fs.existsSync(copy.staged)) await stageHomeCopy(copy, config.blockBytes, ownBytes(copy.id, await index.cleanClose(), config.segmentBytes))
        fs.renameSync(copy.staged, copy.dst) // its header is rewritten below, with the others
        result.segmentsCopiedIn++
      }
      const cur = batch.segments.get(id) ?? r
      batch.segments.set(id, { ...cur, volumes: [...new Set([...(cur.volumes ?? []).filter(x => x !== v.id), LOCAL_VOLUME])] })
    }
    if (marker?.assignedTo === intent.from) dropped.add(v.dir)
  }
  if (copies.size > 0) syncDir(internal)
  if (pool && dropped.size > 0) {
    pool.volumes = pool.volumes.filter(v => !dropped.has(v.dir)).map(v => v.internal ? { ...v, dir: 'segments' } : v)
    // A store made with create --pool gave its own segments/ no capacity; with the original's
    // volumes gone it holds every segment and must take new ones too, or the first write
    // after the adopt failed with ENOSPC (found by a hostile test, 2026-12-06).
    const internalVolume = pool.volumes.find(v => v.internal)
    if (internalVolume?.capacityBytes === 0 && pool.volumes.every(v => v.internal)) {
      delete internalVolume.capacityBytes
      result.internalCapacityRestored = true
    }
    writeFileAtomic(poolFile, JSON.stringify(pool, null, 2) + '\n')
    result.volumesDropped = [...dropped]
  }
  // mirror=2 with the original's volumes gone: a copy whose pool cannot hold two copies kept
  // mirror=2, and every write that needed a new segment failed with ENOSPC (helper-84). It is
  // lowered to what the pool holds (checked again on a resumed adopt: the pool file went first).
  const policy = readPolicy(dir)
  const volumesLeft = pool ? pool.volumes.length : 1
  if (intent.copyOf !== null && policy.mirror > volumesLeft) {
    result.mirrorLowered = { from: policy.mirror, to: volumesLeft }
    writePolicy(dir, { ...policy, mirror: volumesLeft as typeof policy.mirror })
  }
  if (batch.segments.size > 0) {
    const checkpoint = await index.checkpoint()
    if (checkpoint) await index.commit(batch, checkpoint)
    await index.sync()
  }

  // Segment headers, on every volume the store now owns.
  const dirs = [internal, ...result.volumesRenamed.map(v => path.join(v, intent.to))]
  for (const d of dirs) {
    let names: string[] = []
    try { names = fs.readdirSync(d) } catch { continue }
    for (const name of names) {
      if (parseSegmentFileName(name) === undefined) continue
      if (rewriteHeader(path.join(d, name), intent)) result.segmentsRewritten++
    }
    syncDir(d)
  }
  fs.rmSync(path.join(dir, 'cache'), { recursive: true, force: true }) // fetched copies under the old uuid

  // The baseline index names the store too.
  const { index: baselineIdx } = baselineFiles(dir)
  if (fs.existsSync(baselineIdx)) {
    let idx = await readBaselineIndex(nodeFileLayer, dir, intent.to).catch(() => undefined)
    if (!idx) {
      idx = await readBaselineIndex(nodeFileLayer, dir, intent.from)
      if (idx) await writeBaselineIndex(nodeFileLayer, dir, intent.to, idx)
    }
    result.baseline = !!idx
    // Where the copied log had the baseline's versions: for a replica of the original only.
    fs.rmSync(originsFile(dir), { force: true })
  }

  // Archived segments: staged already, unless adopt.json was written before phases were.
  if (intent.phase === undefined) result.archivedCopied = await copyArchived(dir, records, intent, here, log)

  // A copy's clones.json lists its original's clones; a copy of a clone is a clone of the
  // same snapshot, which its parent must know of by its new uuid (delete protects it).
  forgetOthersClones(dir)
  const cloneOf = readCloneRecord(dir)
  if (cloneOf) registerClone(cloneOf.parent, dir, intent.to, cloneOf.snapshot)

  // Last: the new uuid becomes the store's, then the intent goes.
  writeConfig(dir, { ...config, uuid: intent.to })
  recordIdentity(dir, { ...config, uuid: intent.to }, here)
  for (const f of ['daemon.json', 'holder.json']) fs.rmSync(path.join(dir, f), { force: true }) // copied along from the original
  fs.rmSync(path.join(dir, ADOPT_SHORT_FILE), { force: true })
  fs.rmSync(intentFile, { force: true })
  syncDir(dir)
}

function lockedError (dir: string, err: unknown): LogdiskError {
  return new LogdiskError('STORE_LOCKED', `${dir} is in use (mounted, or a command runs on it); unmount it first: adopt changes the store's identity`, err)
}

/** The segment records, read through a private view of the index: nothing of the store is written. */
async function segmentRecordsReadOnly (dir: string): Promise<Map<number, SegmentRecord>> {
  const scratch = makeScratchDir()
  try {
    const view = privateIndexView(dir, scratch, err => lockedError(dir, err))
    let index: IndexDb
    try {
      index = await IndexDb.open(view.dir)
    } catch (err) {
      if (isLogdiskError(err, 'STORE_LOCKED')) throw lockedError(dir, err)
      throw err
    }
    try {
      return await index.segments()
    } finally {
      await index.close()
    }
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true })
  }
}

function readPoolFile (dir: string): PoolFile | undefined {
  const poolFile = path.join(dir, POOL_FILE)
  return fs.existsSync(poolFile) ? JSON.parse(fs.readFileSync(poolFile, 'utf8')) as PoolFile : undefined
}

type PoolVolumeEntry = PoolFile['volumes'][number]
type IntentSketch = Pick<AdoptIntent, 'from' | 'copyOf'> & { to?: string, phase?: AdoptIntent['phase'] }

/** Whether a pool volume is this store's own (its directory follows the uuid), not the original's of a copy. */
function ownsVolume (v: PoolVolumeEntry, intent: IntentSketch, here: Location): boolean {
  return intent.copyOf === null && typeof ownerVerdict(readOwnerRecord(path.join(v.dir, intent.from)), here, intent.from) !== 'object'
}

/**
 * This store's segments on pool volumes that are not its own and not home yet, by id. Throws
 * NOT_FOUND for one whose file is gone from the volume (before anything was written, when
 * called up front).
 */
function homeCopies (records: Map<number, SegmentRecord>, external: PoolVolumeEntry[], intent: IntentSketch, here: Location, internal: string): Map<number, HomeCopy> {
  const out = new Map<number, HomeCopy>()
  for (const v of external) {
    if (!v.id || ownsVolume(v, intent, here)) continue
    for (const [id, r] of records) {
      if (!(r.volumes ?? []).includes(v.id) || out.has(id)) continue
      const name = segmentFileName(id)
      const dst = path.join(internal, name)
      const staged = `${dst}${STAGED_SUFFIX}`
      if (fs.existsSync(dst)) continue
      const src = path.join(v.dir, intent.from, name)
      let bytes = 0
      let sources = [src]
      if (!fs.existsSync(staged)) {
        if (!fs.existsSync(src)) throw new LogdiskError('NOT_FOUND', `segment ${id} of this copy is on pool volume ${v.dir} (${src}), which does not have it any more; nothing of the original was changed`)
        // Mirrored (copies on later volumes too): the first copy that passes its checksums.
        const others = external.filter(o => o !== v && o.id !== undefined && (r.volumes ?? []).includes(o.id)).map(o => path.join(o.dir, intent.from, name)).filter(f => fs.existsSync(f))
        sources = [src, ...others]
        for (const f of sources) {
          try { bytes = Math.max(bytes, fs.statSync(f).size) } catch { /* gone meanwhile: the copy says */ }
        }
      }
      out.set(id, { id, sources, dst, staged, bytes })
    }
  }
  return out
}

/**
 * What adopt must still write, by filesystem: its index and small files (headroom), the
 * baseline index re-encoded, the segments to copy home, and the archived objects to put under
 * the new uuid when the archive is a directory (a bucket's room is not ours to count).
 */
async function roomFor (dir: string, records: Map<number, SegmentRecord>, intent: IntentSketch, here: Location): Promise<RoomNeeds> {
  const needs = new RoomNeeds()
  // Besides whole files: the index batch, adopt.json, store.json, identity.json, pool.json.
  needs.add(dir, SMALL_FILES_ROOM_BYTES, 'its index and small files', false)
  const { index: baselineIdx, dir: baselineDir } = baselineFiles(dir)
  try { needs.add(baselineDir, fs.statSync(baselineIdx).size, 'its baseline index, re-encoded', false) } catch { /* no baseline */ }
  const internal = path.join(dir, 'segments')
  const where = fs.existsSync(internal) ? internal : dir
  // What a stopped run left half-copied is removed before anything is written.
  needs.credit(where, allocatedBytes(where, halfCopies(where)))
  if (intent.phase !== 'committing') {
    const external = (readPoolFile(dir)?.volumes ?? []).filter(v => !v.internal)
    for (const copy of homeCopies(records, external, intent, here, internal).values()) {
      if (copy.bytes > 0) needs.add(where, copy.bytes, 'segment(s) copied home from the original\'s pool volumes')
    }
    const spec = readPolicy(dir)['archive.target']
    const archived = archivedIds(records)
    if (spec !== '' && archived.length > 0) {
      const t = parseTarget(spec)
      try {
        if (t instanceof DirTarget) {
          let present = new Set<string>()
          try { present = new Set(fs.readdirSync(t.dir)) } catch { /* the copy says what is wrong */ }
          for (const id of archived) {
            if (intent.to !== undefined && present.has(archiveObjectName(intent.to, id))) continue
            let bytes = 0
            try { bytes = fs.statSync(path.join(t.dir, archiveObjectName(intent.from, id))).size } catch { /* the fetch says */ }
            needs.add(t.dir, bytes, 'archived segment(s) put under the new identity')
          }
        }
      } finally {
        await t.close()
      }
    }
  }
  return needs
}

function archivedIds (records: Map<number, SegmentRecord>): number[] {
  return [...records].filter(([, r]) => r.archived === true || r.state === 'archived').map(([id]) => id)
}

/** Archived segments: objects are named by uuid, and their headers carry it. Puts those not under the new name yet. */
async function copyArchived (dir: string, records: Map<number, SegmentRecord>, intent: AdoptIntent, here: Location, log: (line: string) => void): Promise<number> {
  const target = readPolicy(dir)['archive.target']
  const archived = archivedIds(records)
  if (target === '' || archived.length === 0) return 0
  let copied = 0
  const t = parseTarget(target)
  try {
    const oldLink = archiveLink(t, intent.from)
    const newLink = archiveLink(t, intent.to)
    const have = new Set(await newLink.list())
    for (const id of archived) {
      if (have.has(id)) continue
      const data = await oldLink.get(id)
      rewriteHeaderBuffer(data, intent)
      await newLink.put(id, data)
      copied++
      log(`archived segment ${id} copied under the new identity`)
    }
    await t.put(`${intent.to}.owner.json`, Buffer.from(JSON.stringify(ownerRecord(intent.to, here), null, 2) + '\n'))
  } finally {
    await t.close()
  }
  return copied
}

/** Files a stopped run left half-written in segments/ (a staged copy being written, or an older adopt's copy). */
function halfCopies (internal: string): string[] {
  let names: string[] = []
  try { names = fs.readdirSync(internal) } catch { return [] }
  return names.filter(n => /^seg-\d{12}\.log/.test(n) && (n.endsWith(STAGING_SUFFIX) || n.endsWith(OLD_TMP_SUFFIX)))
}

function removeHalfCopies (internal: string): void {
  for (const n of halfCopies(internal)) fs.rmSync(path.join(internal, n), { force: true })
}

/** adopt-short.json's size: one block, so that rewriting it in place never needs room. */
const SHORT_FILE_BYTES = 4096

/**
 * Best effort: adopt-short.json says how much more room the adopt needs (undefined: it has
 * what it needs), for the refusal other commands give meanwhile (identity.ts).
 */
function recordShort (dir: string, short: RoomShort | undefined): void {
  const text = short === undefined ? '{}' : JSON.stringify({ bytes: moreBytes(short), where: short.where })
  const buf = Buffer.alloc(Math.max(SHORT_FILE_BYTES, text.length), ' ')
  buf.write(text)
  const file = path.join(dir, ADOPT_SHORT_FILE)
  try {
    const fd = fs.openSync(file, fs.existsSync(file) ? 'r+' : 'w')
    try {
      fs.writeSync(fd, buf, 0, buf.length, 0)
      fs.fsyncSync(fd)
    } finally {
      fs.closeSync(fd)
    }
  } catch { /* no room even for that: the adopt's own error says it */ }
}

function syncDir (dir: string): void {
  const fd = fs.openSync(dir, 'r')
  try { fs.fsyncSync(fd) } finally { fs.closeSync(fd) }
}

function uuidBytes (uuid: string): Buffer {
  return Buffer.from(uuid.replace(/-/g, ''), 'hex')
}

/**
 * Rewrites the uuid in a segment header held in `buf` (bytes 48-64, CRC at 64); true if it
 * changed. Throws IDENTITY when the intact header names a third store; leaves a damaged header
 * alone (recovery judges it).
 */
function rewriteHeaderBuffer (buf: Buffer, intent: AdoptIntent): boolean {
  if (buf.length < 68 || buf.toString('latin1', 0, 16) !== SEGMENT_MAGIC || buf.readUInt32LE(64) !== crc32c(buf.subarray(0, 64))) return false
  const owner = buf.subarray(48, 64)
  if (owner.equals(uuidBytes(intent.to))) return false
  if (!owner.equals(uuidBytes(intent.from))) throw new LogdiskError('IDENTITY', `a segment header names store ${owner.toString('hex')}, neither ${intent.from} nor ${intent.to}; adopt stopped (run it again once the stray file is gone)`)
  uuidBytes(intent.to).copy(buf, 48)
  buf.writeUInt32LE(crc32c(buf.subarray(0, 64)), 64)
  return true
}

function rewriteHeader (file: string, intent: AdoptIntent): boolean {
  const fd = fs.openSync(file, 'r+')
  try {
    const header = Buffer.alloc(SEGMENT_HEADER_BYTES)
    const n = fs.readSync(fd, header, 0, 68, 0)
    if (n < 68) return false
    let changed: boolean
    try {
      changed = rewriteHeaderBuffer(header, intent)
    } catch (err) {
      throw new LogdiskError('IDENTITY', `${file}: ${(err as Error).message}`)
    }
    if (!changed) return false
    fs.writeSync(fd, header, 0, 68, 0)
    fs.fdatasyncSync(fd)
    return true
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * How much of segment `id` is this store's when its log ended at `end` at its last clean close
 * (undefined: all of it, or no clean close on record). A copy's segments on the original's
 * pool volumes are the original's files: what follows that end in them is the original's,
 * written since (helper-62's sequence), never the copy's, and was copied home with them.
 */
function ownBytes (id: number, end: { position: number } | undefined, segmentBytes: number): number | undefined {
  if (end === undefined) return undefined
  const last = Math.floor(end.position / segmentBytes)
  if (id < last) return undefined
  return id === last ? Math.max(end.position % segmentBytes, SEGMENT_HEADER_BYTES) : SEGMENT_HEADER_BYTES
}

/**
 * Copies a segment home to its staged name, whole and fsynced (its header still names the old
 * uuid: the commit rewrites it with the others). A half-written copy is removed, so a lack of
 * room leaves nothing behind but the copies already whole.
 */
async function stageHomeCopy (copy: HomeCopy, blockBytes: number, keepBytes: number | undefined): Promise<void> {
  const src = copy.sources.length > 1 ? await firstIntactCopy(copy.sources, blockBytes) : copy.sources[0]
  const tmp = copy.dst + STAGING_SUFFIX
  try {
    fs.copyFileSync(src, tmp)
    if (keepBytes !== undefined && fs.statSync(tmp).size > keepBytes) fs.truncateSync(tmp, keepBytes)
    const fd = fs.openSync(tmp, 'r+')
    try { fs.fsyncSync(fd) } finally { fs.closeSync(fd) }
  } catch (err) {
    fs.rmSync(tmp, { force: true })
    throw err
  }
  fs.renameSync(tmp, copy.staged)
}
