import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError, isLogdiskError } from '../errors'
import { clonesReadingFrom, forgetOthersClones, readCloneRecord, registerClone } from '../clone/clone'
import { archiveLink } from '../archive/link'
import { parseTarget } from '../archive/parse-target'
import { readPolicy } from '../policy/policy'
import { OWNER_FILE, type PoolFile } from '../pool/pool'
import { readMarker, reassign } from '../pool/volume-marker'
import { baselineFiles, readBaselineIndex, writeBaselineIndex } from '../store/baseline'
import { originsFile } from '../store/baseline-origins'
import { readConfig, writeConfig, writeFileAtomic } from '../store/config'
import { firstIntactCopy } from './intact-copy'
import { crc32c } from '../store/crc'
import { nodeFileLayer } from '../store/file-layer'
import { SEGMENT_HEADER_BYTES, SEGMENT_MAGIC, parseSegmentFileName, segmentFileName } from '../store/format'
import { ADOPT_FILE, checkIdentity, foreignSegment, locationOf, ownerRecord, ownerVerdict, recordIdentity, type OwnerRecord } from '../store/identity'
import { IndexBatch, IndexDb } from '../store/index-db'
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
 * Crash-safe and resumable: adopt.json records the old and new uuid first (every command but
 * adopt refuses the store while it is there); each step accepts work already done, so running
 * adopt again after a crash finishes the job. The store's lock is held throughout.
 */
export interface AdoptIntent {
  from: string
  to: string
  /** The store was a copy of another one (at `original`): its pool volumes are not its own. */
  copyOf: string | null
  startedAt: string
}

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
  archivedCopied: number
  baseline: boolean
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
  let index: IndexDb
  try {
    index = await IndexDb.open(path.join(dir, 'index'))
  } catch (err) {
    if (isLogdiskError(err, 'STORE_LOCKED')) throw new LogdiskError('STORE_LOCKED', `${dir} is in use (mounted, or a command runs on it); unmount it first: adopt changes the store's identity`, err)
    throw err
  }
  try {
    let intent: AdoptIntent
    if (fs.existsSync(intentFile)) {
      intent = JSON.parse(fs.readFileSync(intentFile, 'utf8')) as AdoptIntent
      if (config.uuid !== intent.from && config.uuid !== intent.to) {
        throw new LogdiskError('IDENTITY', `${intentFile} is about uuid ${intent.from} -> ${intent.to}, but store.json says ${config.uuid}; it does not belong to this store (move it away to go on)`)
      }
      log(`resuming an interrupted adopt: ${intent.from} -> ${intent.to}`)
    } else {
      // Clones read through to their parent by its uuid: a new one would cut them off for good
      // (a hostile test, helper-53: the parent adopted, its clone failed to open and the
      // delete guard no longer saw it). A copy's clones.json names its original's clones,
      // which read from the original: not this store's.
      const clones = clonesReadingFrom(dir)
      if (clones.length > 0) {
        throw new LogdiskError('BUSY', `${dir} has clone${clones.length > 1 ? 's' : ''} ${clones.join(', ')} that read${clones.length > 1 ? '' : 's'} through to it by its identity; a new identity would cut ${clones.length > 1 ? 'them' : 'it'} off: promote ${clones.length > 1 ? 'them' : 'it'} first (logdisk promote <clone>); nothing was changed`)
      }
      intent = { from: config.uuid, to: crypto.randomUUID(), copyOf: identity?.kind === 'copy' ? identity.original! : null, startedAt: new Date().toISOString() }
      writeFileAtomic(intentFile, JSON.stringify(intent, null, 2) + '\n')
    }
    const result: AdoptResult = { from: intent.from, to: intent.to, copyOf: intent.copyOf, segmentsRewritten: 0, segmentsCopiedIn: 0, volumesRenamed: [], volumesDropped: [], archivedCopied: 0, baseline: false }
    const here = locationOf(dir)
    const internal = path.join(dir, 'segments')
    fs.mkdirSync(internal, { recursive: true })
    const records = await index.segments()
    const batch = new IndexBatch()
    // The index changes here without an open of the store: a saved block map goes first.
    await dropBlockMap(nodeFileLayer, path.join(dir, 'index'))

    // Pool volumes: the store's own directory follows the uuid; a copy takes its segments home.
    const poolFile = path.join(dir, POOL_FILE)
    const pool: PoolFile | undefined = fs.existsSync(poolFile) ? JSON.parse(fs.readFileSync(poolFile, 'utf8')) as PoolFile : undefined
    const external = (pool?.volumes ?? []).filter(v => !v.internal)
    const dropped = new Set<string>()
    for (const v of external) {
      let marker
      try { marker = readMarker(v.dir) } catch { marker = undefined }
      const fromDir = path.join(v.dir, intent.from)
      const toDir = path.join(v.dir, intent.to)
      let owner: OwnerRecord | undefined
      try { owner = JSON.parse(fs.readFileSync(path.join(fromDir, OWNER_FILE), 'utf8')) as OwnerRecord } catch { owner = undefined }
      const verdict = ownerVerdict(owner, here, intent.from)
      const ours = intent.copyOf === null && typeof verdict !== 'object'
      if (ours) {
        if (fs.existsSync(fromDir) && !fs.existsSync(toDir)) {
          fs.renameSync(fromDir, toDir)
          syncDir(v.dir)
        }
        if (fs.existsSync(toDir)) writeFileAtomic(path.join(toDir, OWNER_FILE), JSON.stringify(ownerRecord(intent.to, here), null, 2) + '\n')
        if (marker) reassign(v.dir, intent.from, intent.to)
        result.volumesRenamed.push(v.dir)
        continue
      }
      // The original's volume: copy this store's segments on it into segments/, read only there.
      if (!v.id) continue
      for (const [id, r] of records) {
        if (!(r.volumes ?? []).includes(v.id)) continue
        const name = segmentFileName(id)
        const dst = path.join(internal, name)
        if (!fs.existsSync(dst)) {
          const src = path.join(fromDir, name)
          if (!fs.existsSync(src)) throw new LogdiskError('NOT_FOUND', `segment ${id} of this copy is on pool volume ${v.dir} (${src}), which does not have it any more; nothing of the original was changed`)
          // Mirrored (copies on later volumes too): the first copy that passes its checksums.
          const others = external.filter(o => o !== v && o.id !== undefined && (r.volumes ?? []).includes(o.id)).map(o => path.join(o.dir, intent.from, name)).filter(f => fs.existsSync(f))
          copyInSegment(others.length > 0 ? await firstIntactCopy([src, ...others], config.blockBytes) : src, dst, intent)
          result.segmentsCopiedIn++
        }
        const cur = batch.segments.get(id) ?? r
        batch.segments.set(id, { ...cur, volumes: [...new Set([...(cur.volumes ?? []).filter(x => x !== v.id), LOCAL_VOLUME])] })
      }
      if (marker?.assignedTo === intent.from) dropped.add(v.dir)
    }
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

    // Archived segments: objects are named by uuid, and their headers carry it.
    const target = readPolicy(dir)['archive.target']
    const archived = [...records].filter(([, r]) => r.archived === true || r.state === 'archived').map(([id]) => id)
    if (target !== '' && archived.length > 0) {
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
          result.archivedCopied++
          log(`archived segment ${id} copied under the new identity`)
        }
        await t.put(`${intent.to}.owner.json`, Buffer.from(JSON.stringify(ownerRecord(intent.to, here), null, 2) + '\n'))
      } finally {
        await t.close()
      }
    }

    // A copy's clones.json lists its original's clones; a copy of a clone is a clone of the
    // same snapshot, which its parent must know of by its new uuid (delete protects it).
    forgetOthersClones(dir)
    const cloneOf = readCloneRecord(dir)
    if (cloneOf) registerClone(cloneOf.parent, dir, intent.to, cloneOf.snapshot)

    // Last: the new uuid becomes the store's, then the intent goes.
    writeConfig(dir, { ...config, uuid: intent.to })
    recordIdentity(dir, { ...config, uuid: intent.to }, here)
    for (const f of ['daemon.json', 'holder.json']) fs.rmSync(path.join(dir, f), { force: true }) // copied along from the original
    fs.rmSync(intentFile, { force: true })
    syncDir(dir)
    return result
  } finally {
    await index.close()
  }
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

/** Copies a segment file (sparse stays sparse enough: whole file) with its header rewritten. */
function copyInSegment (src: string, dst: string, intent: AdoptIntent): void {
  const tmp = `${dst}.adopt`
  fs.copyFileSync(src, tmp)
  rewriteHeader(tmp, intent)
  const fd = fs.openSync(tmp, 'r+')
  try { fs.fsyncSync(fd) } finally { fs.closeSync(fd) }
  fs.renameSync(tmp, dst)
}
