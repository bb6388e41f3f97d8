import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError, isLogdiskError } from '../errors'
import { decodeArchive } from '../archive/codec'
import type { ArchiveTarget } from '../archive/target'
import { CONFIG_FILE, readConfig, writeConfig, writeFileAtomic } from '../store/config'
import { segmentFileName, SEGMENT_HEADER_BYTES } from '../store/format'
import { recordIdentity } from '../store/identity'
import { silentLogger, type Logger } from '../store/logger'
import { POLICY_FILE, readPolicy } from '../policy/policy'
import { openStore } from '../app/open'
import { newestManifest, type Manifest } from './format'
import { decodeIndexCheckpoint } from './index-checkpoint'
import { useReplicaTarget, writeReplicaSource } from './source-link'
import { recordReader, releaseReader } from './reader-records'
import { PARTIAL_FILE, clearForRecovery, partialRunning, readPartial, unfinishedError, writePartial } from './partial'
import { makeDirs } from '../make-dirs'
import { pack, unpack } from 'msgpackr'
import { IndexDb, type SegmentRecord } from '../store/index-db'
import { ENTRY_PREFIX, HISTORY_PREFIX, PENDING_HEADERS_KEY, RECORD_PREFIX, SEGMENT_PREFIX, numberKey, readU64BE } from '../store/keys'
import { forEachVersion } from '../store/history-record'
import { BASELINE_BASE } from '../store/baseline'
import { tableBytes } from '../store/entry'
import { EntryKind } from '../store/format'
import type { EntryRecord } from '../store/index-db'
import { lowerBound } from '../store/compaction'

export interface RecoverResult {
  dir: string
  from: string
  manifest: string
  generation: number
  /** The point the store was rebuilt to. */
  seq: number
  /** What --at resolved to, when given. */
  at?: string
  segments: number
  /** Log bytes fetched (decoded). */
  bytes: number
  seconds: number
  /** 'lazy': from the index checkpoint, older segments left on the replica; 'full': the whole log fetched. */
  mode: 'lazy' | 'full'
  /** Segments left on the replica (fetched on demand). */
  remoteSegments: number
}

/**
 * `logdisk create <store> --from <replica> [--at POINT]` (docs/REPLICATION.md): builds a store
 * from a replica alone. Every object the newest manifest names is fetched first (the whole log:
 * the index is rebuilt by scanning it, since the replica carries no index), then the store is
 * opened once to rebuild its index; with `at`, the log is cut just after that point and the
 * index rebuilt again. The store keeps the original's uuid (segment headers carry it) and its
 * policies, except `replicate.target` and `archive.target`, which are cleared: the new store
 * writes nowhere until told to (see CLI.md for continuing the replica with --takeover).
 *
 * Needs a new or empty directory. On failure the directory is removed again if this made it.
 */
export async function createFromReplica (dir: string, target: ArchiveTarget, opts: { spec?: string, at?: string, log?: Logger, skipDamagedManifest?: boolean, recordReader?: boolean } = {}): Promise<RecoverResult> {
  const started = Date.now()
  const log = opts.log ?? silentLogger
  const spec = opts.spec ?? target.describe()
  dir = path.resolve(dir)
  const mark = readPartial(dir)
  if (mark) {
    if (partialRunning(mark)) throw unfinishedError(dir, mark)
    log.warn({ dir, from: mark.from, pid: mark.pid, startedAt: mark.startedAt }, 'an unfinished create --from left this directory; starting over')
  } else {
    if (fs.existsSync(path.join(dir, CONFIG_FILE))) throw new LogdiskError('STORE_EXISTS', `a store already exists at ${dir}`)
    if (fs.existsSync(dir) && fs.readdirSync(dir).length > 0) throw new LogdiskError('BAD_ARGUMENT', `${dir} is not empty; give a new or empty directory for the store`)
  }
  const made = !fs.existsSync(dir)
  makeDirs(dir)
  writePartial(dir, spec)
  try {
    // A damaged newest manifest: recovering from the one before it would go back in time
    // without a word (what the damaged one committed since, acknowledged writes, is not there).
    const warned = new Set<string>()
    const onDamaged = (name: string, err: LogdiskError): void => {
      if (opts.skipDamagedManifest !== true) throw new LogdiskError('CORRUPT', `the newest manifest of ${spec}, ${name}, is damaged (${err.message}); nothing was created. An older manifest may still recover an earlier point: give --skip-damaged-manifest (what ${name} committed after it is then not in the store)`, err)
      // Once each: the lazy and the full path both look for the newest manifest.
      if (!warned.has(name)) log.warn({ manifest: name, err: err.message }, `skipped the damaged manifest ${name} of the replica: the store is recovered from an older one, without what ${name} committed after it`)
      warned.add(name)
    }
    const r = await build(dir, target, spec, log, opts.at, started, onDamaged, opts.recordReader !== false)
    fs.rmSync(path.join(dir, PARTIAL_FILE))
    return r
  } catch (err) {
    clearForRecovery(dir)
    fs.rmSync(path.join(dir, PARTIAL_FILE), { force: true })
    if (made) fs.rmSync(dir, { recursive: true, force: true })
    throw err
  }
}

/** createFromReplica's work, in a directory that holds only the partial mark. */
async function build (dir: string, target: ArchiveTarget, spec: string, log: Logger, atSpec: string | undefined, started: number, onDamaged: (name: string, err: LogdiskError) => void, withRecord: boolean): Promise<RecoverResult> {
  const lazy = await recoverLazily(dir, target, spec, log, atSpec, onDamaged, withRecord)
  if (lazy) return { ...lazy, seconds: (Date.now() - started) / 1000 }
  // A manifest may name objects that the holder deletes as garbage meanwhile (after a grace
  // period): start again from the newest manifest then.
  let fetched: { name: string, m: Manifest, bytes: number } | undefined
  for (let attempt = 1; !fetched; attempt++) {
    const newest = await newestManifest(target, onDamaged)
    if (!newest) throw new LogdiskError('NOT_FOUND', `${spec} holds no replica (no manifest objects); nothing was created`)
    clearForRecovery(dir)
    fs.mkdirSync(path.join(dir, 'segments'))
    fs.mkdirSync(path.join(dir, 'index'))
    try {
      fetched = { name: newest.name, m: newest.manifest, bytes: await fetchLog(target, newest.manifest, path.join(dir, 'segments')) }
    } catch (err) {
      if (!isLogdiskError(err, 'NOT_FOUND') || attempt >= 3) throw err
      log.warn({ manifest: newest.name }, 'an object of the replica went away while fetching; starting again from the newest manifest')
    }
  }
  const { name, m, bytes } = fetched
  const config = writeStoreFiles(dir, m)
  // Rebuild the index from the fetched log.
  const { seq, at } = await openAndCut(dir, log, spec, name, m, atSpec, async cut => { cutLog(dir, config.segmentBytes, cut) })
  return { dir, from: spec, manifest: name, generation: m.generation, seq, at, segments: Object.keys(m.segments).length + Object.keys(m.tails).length, bytes, seconds: (Date.now() - started) / 1000, mode: 'full', remoteSegments: 0 }
}

/**
 * Opens the store just built from manifest `name` (the open rebuilds its index), checks that
 * its log ends where the manifest says, and with `atSpec` cuts it right after that point
 * (`cutAt`, as the way it was built needs; `refuse` may throw for a point it cannot cut at)
 * and opens it again to rebuild the index to there.
 */
async function openAndCut (dir: string, log: Logger, spec: string, name: string, m: Manifest, atSpec: string | undefined,
  cutAt: (position: number) => Promise<void>, refuse?: (pointSeq: number) => void): Promise<{ seq: number, at?: string }> {
  let { store } = await openStore(dir, { holder: 'logdisk create --from', logger: log })
  let seq = store.status().index.seq
  let at: string | undefined
  try {
    if (seq !== m.point.seq) {
      throw new LogdiskError('CORRUPT', `${spec}: the log recovered from ${name} ends at sequence ${seq}, but the manifest says ${m.point.seq}; nothing usable was created`)
    }
    if (atSpec !== undefined) {
      const point = await store.resolvePoint(atSpec)
      refuse?.(point.seq)
      at = point.what
      // The volume's size at the point: the resizes after it go with the log cut there, and
      // store.json (the manifest's) has the size after them.
      const sizeThen = store.sizeAt(point.seq)
      let cut: number | undefined
      for await (const e of store.entries(point.seq + 1, point.seq + 1)) { cut = e.position; break }
      await store.close()
      if (cut !== undefined) await cutAt(cut)
      const config = readConfig(dir)
      if (config.sizeBytes !== sizeThen) writeConfig(dir, { ...config, sizeBytes: sizeThen })
      ;({ store } = await openStore(dir, { holder: 'logdisk create --from', logger: log }))
      seq = store.status().index.seq
      if (seq !== point.seq) throw new LogdiskError('CORRUPT', `cutting the recovered log at ${point.what} left it ending at sequence ${seq}`)
    }
  } finally {
    await store.close()
  }
  return { seq, at }
}

/**
 * policy.json (targets cleared: the new store writes nowhere until told to), then store.json
 * (last but identity: now it is a store), then the identity record. The manifest's store.json
 * holds the rules any store.json must (readConfig checks them).
 */
function writeStoreFiles (dir: string, m: Manifest): ReturnType<typeof readConfig> {
  const policy = { ...(m.policy ?? {}), 'replicate.target': '', 'archive.target': '' }
  writeFileAtomic(path.join(dir, POLICY_FILE), JSON.stringify(policy, null, 2) + '\n')
  writeFileAtomic(path.join(dir, CONFIG_FILE), JSON.stringify(m.store, null, 2) + '\n')
  const config = readConfig(dir)
  readPolicy(dir)
  recordIdentity(dir, config)
  return config
}

/** Writes every segment the manifest names into `segDir`; returns the bytes written. */
async function fetchLog (target: ArchiveTarget, m: Manifest, segDir: string, from = 0): Promise<number> {
  let bytes = 0
  const S = Number((m.store as { segmentBytes?: number }).segmentBytes)
  for (const [id, object] of Object.entries(m.segments)) {
    if (Number(id) < from) continue
    bytes += writeSegment(segDir, Number(id), [await get(target, object)])
  }
  for (const [id, parts] of Object.entries(m.tails)) {
    if (m.segments[id] !== undefined || Number(id) < from) continue
    const chunks: Buffer[] = []
    let at = 0
    for (const p of parts) {
      if (p.from !== at) throw new LogdiskError('CORRUPT', `${target.describe()}: the parts of segment ${id} do not follow each other (${p.name} starts at ${p.from}, the one before ends at ${at})`)
      const data = await get(target, p.name)
      if (data.length !== p.to - p.from) throw new LogdiskError('CORRUPT', `${target.describe()}: ${p.name} holds ${data.length} bytes, not ${p.to - p.from}`)
      chunks.push(data)
      at = p.to
    }
    if (at < SEGMENT_HEADER_BYTES) continue
    bytes += writeSegment(segDir, Number(id), chunks)
  }
  const end = m.point.position
  if (end > 0 && Number.isFinite(S)) {
    const last = Math.floor(end / S)
    const off = end % S
    if (off >= SEGMENT_HEADER_BYTES && !fs.existsSync(path.join(segDir, segmentFileName(last)))) {
      throw new LogdiskError('CORRUPT', `${target.describe()}: the manifest ends in segment ${last}, which it does not name`)
    }
  }
  return bytes
}

async function get (target: ArchiveTarget, name: string): Promise<Buffer> {
  const raw = await target.get(name)
  try {
    return await decodeArchive(raw)
  } catch (err) {
    if (err instanceof LogdiskError) throw new LogdiskError(err.code, `${target.describe()}: ${name}: ${err.message}`, err)
    throw err
  }
}

function writeSegment (segDir: string, id: number, chunks: Buffer[]): number {
  const file = path.join(segDir, segmentFileName(id))
  const fd = fs.openSync(file, 'w', 0o600)
  let n = 0
  try {
    for (const c of chunks) {
      fs.writeSync(fd, c, 0, c.length, n)
      n += c.length
    }
    fs.fdatasyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  return n
}

/**
 * Cuts the recovered log at log position `cut` (the first entry after the point): that
 * segment is truncated there, later ones are removed, and the index goes (the next open
 * rebuilds it from what is left).
 */
function cutLog (dir: string, segmentBytes: number, cut: number): void {
  cutLocal(dir, segmentBytes, cut)
  fs.rmSync(path.join(dir, 'index'), { recursive: true, force: true })
  fs.mkdirSync(path.join(dir, 'index'))
}

/**
 * Recovery from the replica's newest index checkpoint (REPLICATION.md "Recovery"): the index
 * is loaded from it, only the segments from the one it ends in are fetched (the replay scans
 * them), and the older ones stay on the replica as `archived` segments read through
 * `replica-source.json` (source-link.ts), fetched on demand into the bounded cache and in the
 * background (hydrate.ts). undefined: the manifest names no index checkpoint (an older
 * replica), or `at` is before it: the caller fetches the whole log instead.
 */
async function recoverLazily (dir: string, target: ArchiveTarget, spec: string, log: Logger, atSpec: string | undefined, onDamaged: (name: string, err: LogdiskError) => void, withRecord: boolean): Promise<Omit<RecoverResult, 'seconds'> | undefined> {
  for (let attempt = 1; ; attempt++) {
    const newest = await newestManifest(target, onDamaged)
    if (!newest) return undefined // the full path says there is no replica
    const { name, manifest: m } = newest
    if (!m.index) return undefined
    try {
      return await recoverFrom(dir, target, spec, log, atSpec, name, m, m.index, withRecord)
    } catch (err) {
      if (err === BEFORE_CHECKPOINT) return undefined
      // The whole log is on the replica too: a damaged checkpoint costs the lazy start only (helper-63).
      if (err instanceof IndexCheckpointDamaged) {
        log.warn({ manifest: name, err: err.cause.message }, `the index checkpoint the replica's manifest names is damaged (${err.cause.message}); fetching the whole log instead`)
        return undefined
      }
      if (!isLogdiskError(err, 'NOT_FOUND') || attempt >= 3) throw err
      log.warn({ manifest: name }, 'an object of the replica went away while fetching; starting again from the newest manifest')
    }
  }
}

const BEFORE_CHECKPOINT = new Error('the point is before the index checkpoint')
class IndexCheckpointDamaged extends Error {
  constructor (readonly cause: LogdiskError) { super(cause.message) }
}

async function recoverFrom (dir: string, target: ArchiveTarget, spec: string, log: Logger, atSpec: string | undefined, name: string, m: Manifest, idx: NonNullable<Manifest['index']>, withRecord: boolean): Promise<Omit<RecoverResult, 'seconds'>> {
  const S = Number((m.store as { segmentBytes?: number }).segmentBytes)
  if (!Number.isSafeInteger(S) || S <= 0) throw new LogdiskError('CORRUPT', `${spec}: ${name} has no valid segmentBytes`)
  let cp
  try {
    cp = await decodeIndexCheckpoint(`${spec}: ${idx.name}`, await target.get(idx.name))
  } catch (err) {
    if (isLogdiskError(err, 'CORRUPT')) throw new IndexCheckpointDamaged(err)
    throw err
  }
  if (cp.seq !== idx.seq || cp.position !== idx.position || cp.position > m.point.position) {
    throw new LogdiskError('CORRUPT', `${spec}: index checkpoint ${idx.name} covers sequence ${cp.seq} at ${cp.position}, which does not match ${name} (${idx.seq} at ${idx.position}, log to ${m.point.position})`)
  }
  // The replay starts in the segment the checkpoint ends in (or the one before, when it ends
  // exactly at a segment's end: recovery.ts reads that as the end of the full segment).
  let from = Math.floor(cp.position / S)
  if (cp.position % S < SEGMENT_HEADER_BYTES && from > 0) from -= 1
  clearForRecovery(dir)
  fs.mkdirSync(path.join(dir, 'segments'))
  fs.mkdirSync(path.join(dir, 'index'))
  // The older segments stay on the replica: the store's reader record keeps them there.
  const remote: Record<string, string> = {}
  for (const [id, object] of Object.entries(m.segments)) if (Number(id) < from) remote[id] = object
  const reader = withRecord && Object.keys(remote).length > 0 ? await putReaderRecord(target, dir, spec, name, log) : undefined
  try {
    const bytes = await fetchLog(target, m, path.join(dir, 'segments'), from)
    // The index as the original had it, with segment records rewritten for this store: the
    // older segments are archived on the replica, the newer ones local (found by the replay).
    const rows = referencedLog(cp.rows.filter(([k]) => !k.equals(PENDING_HEADERS_KEY) && k[0] !== SEGMENT_PREFIX), S, Number((m.store as { blockBytes?: number }).blockBytes))
    const states = new Map<number, SegmentRecord>()
    for (const [k, v] of cp.rows) {
      if (k[0] !== SEGMENT_PREFIX) continue
      const id = readU64BE(k, 1)
      const r = unpack(v) as SegmentRecord
      // A segment the original recycled that the index reads again (a baseline's version, put
      // back at its log position by the checkpoint) comes from the replica like the others.
      if (r.state === 'recycled' && !(rows.segments.has(id) && (remote[String(id)] !== undefined || id >= from))) states.set(id, { state: 'recycled' })
    }
    for (const id of Object.keys(remote).map(Number)) if (!states.has(id)) states.set(id, { state: 'archived', archived: true })
    for (const [id, r] of states) rows.rows.push([numberKey(SEGMENT_PREFIX, id), pack(r)])
    const db = await IndexDb.open(path.join(dir, 'index'))
    try { await db.load(rows.rows) } finally { await db.close() }
    writeReplicaSource(dir, { target: spec, manifest: name, segments: remote, reader })
    useReplicaTarget(spec, target)
    writeStoreFiles(dir, m)
    const { seq, at } = await openAndCut(dir, log, spec, name, m, atSpec, async cut => {
      // The local segments are cut there, and the index goes back to the checkpoint (which is
      // at or before the point): the next open replays up to the cut.
      cutLocal(dir, S, cut)
      fs.rmSync(path.join(dir, 'index'), { recursive: true, force: true })
      fs.mkdirSync(path.join(dir, 'index'))
      const again = await IndexDb.open(path.join(dir, 'index'))
      try { await again.load(rows.rows) } finally { await again.close() }
    }, pointSeq => { if (pointSeq < cp.seq) throw BEFORE_CHECKPOINT })
    log.info({ manifest: name, index: idx.name, local: Object.keys(m.segments).length + Object.keys(m.tails).length - Object.keys(remote).length, remote: Object.keys(remote).length }, 'recovered from the index checkpoint; older segments are read from the replica on demand')
    return { dir, from: spec, manifest: name, generation: m.generation, seq, at, segments: Object.keys(m.segments).length + Object.keys(m.tails).length, bytes, mode: 'lazy', remoteSegments: Object.keys(remote).length }
  } catch (err) {
    if (reader !== undefined) await releaseReader(target, reader).catch(() => undefined)
    throw err
  }
}

/**
 * Puts the store's reader record (reader-records.ts) before anything is fetched, then checks
 * that the manifest is still there: a holder's sweep that listed the records before the put
 * deletes the manifest before any object it names, and lists the records again before the
 * objects. undefined: the replica takes no puts (read-only credentials); a warning says what
 * that risks, and the recovery goes on.
 */
async function putReaderRecord (target: ArchiveTarget, dir: string, spec: string, manifest: string, log: Logger): Promise<string | undefined> {
  let name: string
  try {
    name = (await recordReader(target, dir, manifest)).name
  } catch (err) {
    if (!(err instanceof LogdiskError)) throw err
    log.warn({ manifest, err: err.message }, `could not record on ${spec} that this store reads its older segments there (${err.message}); should the replica's writer not continue ${manifest}, it may delete them before they are fetched`)
    return undefined
  }
  if (!await target.has(manifest)) {
    await releaseReader(target, name).catch(() => undefined)
    throw new LogdiskError('NOT_FOUND', `${spec}: ${manifest} was deleted while recovering from it`)
  }
  return name
}

/** Cuts the local segments at log position `cut`: later ones are removed, that one truncated. */
function cutLocal (dir: string, segmentBytes: number, cut: number): void {
  const segDir = path.join(dir, 'segments')
  const id = Math.floor(cut / segmentBytes)
  for (const f of fs.readdirSync(segDir)) {
    const mm = /^seg-(\d{12})\.log$/.exec(f)
    if (mm && Number(mm[1]) > id) fs.rmSync(path.join(segDir, f))
  }
  fs.truncateSync(path.join(segDir, segmentFileName(id)), cut % segmentBytes)
}

/**
 * The segments the index rows read (history rows' log positions), with every entry summary
 * that holds such a position no longer marked freed: the original freed it after its version
 * went into the baseline, but the replica's copy of the log is whole and the checkpoint now
 * reads it there (portable-index.ts), so compaction here must treat it as live data.
 */
function referencedLog (rows: Array<[Buffer, Buffer]>, S: number, B: number): { rows: Array<[Buffer, Buffer]>, segments: Set<number> } {
  const positions: number[] = []
  const take = (at: number): void => { if (at >= 0 && at < BASELINE_BASE) positions.push(at) }
  for (const [k, v] of rows) {
    if (k[0] === RECORD_PREFIX) forEachVersion(v, (_offset, at) => take(at))
    else if (k[0] === HISTORY_PREFIX) take(v.readDoubleBE(0)) // an index checkpoint of layout 2
  }
  positions.sort((a, b) => a - b)
  const segments = new Set(positions.map(at => Math.floor(at / S)))
  const holds = (e: EntryRecord): boolean => {
    if (e.kind !== EntryKind.write && e.kind !== EntryKind.move) return false
    const end = e.position + tableBytes({ kind: e.kind as EntryKind, count: e.count }) + e.count * B
    const i = lowerBound(positions, e.position)
    return i < positions.length && positions[i] < end
  }
  const out = rows.map(([k, v]): [Buffer, Buffer] => {
    if (k[0] !== ENTRY_PREFIX) return [k, v]
    const e = unpack(v) as EntryRecord
    if (e.freed !== true || !holds(e)) return [k, v]
    return [k, pack({ ...e, freed: false })]
  })
  return { rows: out, segments }
}
