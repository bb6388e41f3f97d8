import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError, isLogdiskError } from '../errors'
import { unpack } from 'msgpackr'
import { BlockMap, DENSE_ROW_BYTES } from './block-map'
import { readUpTo, type FileHandle, type FileLayer } from './file-layer'
import { ENTRY_HEADER_BYTES, BLOCK_CRC_BYTES, EntryKind, INDEX_FORMAT_VERSION, SEGMENT_HEADER_BYTES, TRIMMED, inFlightBytes, trimHolder, parseSegmentFileName, segmentFileName } from './format'
import { IndexBatch, type Checkpoint, type IndexDb } from './index-db'
import { clearPendingHeaders, readPendingHeaders } from './pending-headers'
import { BLOCK_MAP_SLOT_BYTES, adoptSavedMap, deltaLimit, stampMismatch, type TakenBlockMap } from './block-map-file'
import type { Logger } from './logger'
import { scanSegment, type ScannedEntry } from './scanner'
import { FREE_HORIZON_IN_MARKER, decodeHeader, entryBytes, holdsVersions, moveRecordAt, tableBytes, trimRunAt, type EntryHeader } from './entry'
import { BASELINE_BASE, readBaselineIndex } from './baseline'
import { SnapshotTable } from './snapshots'

/** Counter key: the highest volume id ever given (sequential ids without reuse continue from it). */
export const HIGHEST_VOLUME_ID = 'highestVolumeId'
/** Index counter: the cut of the newest snapshot marker with the highest volume id (SnapshotTable.highestIdSeq). */
export const HIGHEST_VOLUME_ID_SEQ = 'highestVolumeIdSeq'
/** Counter key: points before this sequence may have lost versions to compaction. */
export const HISTORY_HORIZON = 'historyHorizon'
import { Segment, segmentHeaderProblem, type SegmentGeometry } from './segment'
import { MirroredHandle } from './mirrored-handle'
import { claimedByOther, foreignSegment, locationOf, ownPlaces } from './identity'
import { CACHE_VOLUME, type SegmentHome } from './segment-home'
import type { SegmentRecord } from './index-db'

export interface RecoveryReport {
  /** Entries read from the log past the index checkpoint and applied. */
  replayedEntries: number
  /** The index was missing or behind what the log allows and was rebuilt from the whole log. */
  rebuiltIndex: boolean
  /** Set when a torn or damaged tail was cut: where, why, and where its bytes were kept. */
  cut?: { segment: number, offset: number, bytes: number, reason: string, savedTo: string, by?: string, copyWrites?: true }
  /** Segment files after a cut, moved aside (never deleted). */
  orphanedSegments: string[]
  /** Segments made ahead that a crash left with no entry and an unreadable header: removed. */
  unfinishedSegments?: number[]
  /** Segments whose files could not be written (a read-only pool volume): the current one among them is sealed at open. */
  readOnlySegments?: number[]
  /** Damage found before the end of the log: reported, left in place, not cut. */
  damaged: Array<{ segment: number, offset: number, reason: string }>
  /**
   * Where the block map came from: the map saved at the last clean close (block-map-file.ts),
   * a scan of the index's history, or the log (an index rebuild); `why` the saved one was not used.
   */
  blockMap: { from: 'saved' | 'index' | 'log', why?: string }
}

export interface Recovered {
  /** The index recorded a clean close that this open went on from (store-open.ts removes the record before appending). */
  cleanClose?: boolean
  segments: number[]
  /** Every segment file found, by id: the volumes holding a copy. */
  located: Map<number, string[]>
  /** The copies recovery trusted, by id, best first (the index's record, or the longest log). */
  chosen: Map<number, string[]>
  current: Segment
  seq: number
  report: RecoveryReport
}

/** Why a torn write was cut rather than kept as damage (see `durability` in recover): ends the cut's reason. */
export const UNFLUSHED = ', which no entry after it records as flushed (a write the power loss tore)'

/** Commits replayed history every this many blocks so a full rebuild runs in bounded memory. */
const REPLAY_COMMIT_BLOCKS = 262144

/**
 * Brings the index up to date with the log on open (004 cl. 10: the index can be rebuilt by
 * scanning the log). Replays entries past the checkpoint into `map` and the index; cuts a torn
 * tail after keeping its bytes in lost+found/, so a torn write is never served and nothing is
 * destroyed.
 */
export async function recover (
  layer: FileLayer, storeDir: string, home: SegmentHome, geometry: SegmentGeometry,
  index: IndexDb, map: BlockMap, log: Logger, onDropped: (id: number) => (volume: string) => void = () => () => {},
  /** Segments backing storage holds (a rebuild fetched them into the cache volume to scan). */
  inArchive: ReadonlySet<number> = new Set(),
  /** Read-only open: nothing in the store is written (no cut, no move aside, no header redo). */
  opts: { readOnly?: boolean, savedMap?: TakenBlockMap, dropCopyWrites?: boolean } = {}
): Promise<Recovered & { snapshots: SnapshotTable }> {
  const located = await listSegments(layer, home, log)
  const ids = [...located.keys()].sort((a, b) => a - b)
  const report: RecoveryReport = { replayedEntries: 0, rebuiltIndex: false, orphanedSegments: [], damaged: [], blockMap: { from: 'index' } }
  let checkpoint = await index.checkpoint()
  const checkpointAtOpen = checkpoint // what a saved block map must match: the index before any change
  // A read-only open has its own copy of the index (OpenOptions.readOnly.indexDir): converting it changes nothing of the store.
  if (checkpoint && (await index.formatVersion()) === 2) {
    log.info({ from: 2, to: INDEX_FORMAT_VERSION }, 'converting the index to records of one entry and chunk')
    await index.upgradeFromLayout2()
  }
  if (checkpoint && (await index.formatVersion()) !== INDEX_FORMAT_VERSION) {
    log.warn({ found: await index.formatVersion(), expected: INDEX_FORMAT_VERSION }, 'the index has another layout; rebuilding it from the log')
    checkpoint = undefined
  }
  if (!opts.readOnly) {
    await redoPendingHeaders(layer, storeDir, home, checkpoint ? index : undefined, log, async id => {
      const record = (await index.segments()).get(id)
      if (record !== undefined && record.unpunched !== true) await index.putSegments(new Map([[id, { ...record, unpunched: true }]]))
    })
  }
  // Which copies of a mirrored segment are current: the index records a copy that fell
  // behind (a failed write) before the store acknowledged anything past it.
  const records: Map<number, SegmentRecord> = checkpoint ? await index.segments() : new Map()
  const chosen = new Map<number, string[]>()
  const copiesOf = async (id: number): Promise<string[]> => {
    let out = chosen.get(id)
    if (out) return out
    const found = located.get(id) ?? []
    const recorded = (records.get(id)?.volumes ?? []).filter(v => found.includes(v))
    // A rebuild scans an archived segment's fetched copy alone: it holds the whole history
    // (a local copy may be punched), and it is never written through.
    out = found.includes(CACHE_VOLUME) ? [CACHE_VOLUME] : recorded.length > 0 ? recorded : await upToDate(found, id)
    chosen.set(id, out)
    return out
  }
  /** Without a record: the copies whose log reaches furthest; the others fell behind. */
  const upToDate = async (found: string[], id: number): Promise<string[]> => {
    const { best, behind } = await byLogEnd(layer, home, found.filter(v => v !== CACHE_VOLUME), id, geometry)
    if (behind.length > 0) log.warn({ segment: id, behind }, 'copies of a segment that fell behind the others are not used (logdisk pool repair replaces them)')
    return best
  }
  /**
   * An archived segment's local copies that a rebuild keeps: those whose log reaches exactly
   * where its fetched copy's does (the same last sequence and end; free headers and punches
   * do not change either). A local copy a pass wrote through reaches there; one that did not
   * is not a copy of the segment the store had: a mirror copy dropped after a failed write
   * (its free headers never synced, or its tail missing) is removed only by the next open or
   * by the archive pass, whose removal of every local copy a power loss may undo. Taken for
   * the local copy, it was read by verify and reads (simulation seed 64018: a torn free header
   * at the start of segment 1 in the copy dropped two phases before, "impossible free run").
   * None kept: the segment stays archived and the open removes the files (store-open.ts).
   */
  const keptOfArchived = new Map<number, string[]>()
  const localOfArchived = async (id: number): Promise<string[]> => {
    let out = keptOfArchived.get(id)
    if (out) return out
    const local = (located.get(id) ?? []).filter(v => v !== CACHE_VOLUME)
    // Free headers do not count here: compaction frees entries in the local copy that backing
    // storage keeps (its history stays whole), so a current local copy holds more of them.
    const { reach } = local.length > 0 ? await byLogEnd(layer, home, [CACHE_VOLUME, ...local], id, geometry) : { reach: undefined }
    const fetched = reach?.get(CACHE_VOLUME)
    const reaching = fetched === undefined ? [] : local.filter(v => { const r = reach!.get(v)!; return r[0] === fetched[0] && r[1] === fetched[1] })
    // Among those, a mirror copy dropped by a failed free header (its removal failed, or a
    // kill -9 came first) holds fewer of them than the copy still named: as byLogEnd, the most.
    const most = Math.max(0, ...reaching.map(v => reach!.get(v)![2]))
    out = reaching.filter(v => reach!.get(v)![2] === most)
    const stale = local.filter(v => !out!.includes(v))
    if (stale.length > 0) log.warn({ segment: id, stale }, 'local copies of an archived segment that do not hold what backing storage holds are not used')
    keptOfArchived.set(id, out)
    return out
  }
  // A position at offset 0 of segment N is the very end of a full segment N-1 (entries start
  // after the header page, so no entry is ever at offset 0).
  let cpSegment = checkpoint ? Math.floor(checkpoint.position / geometry.segmentBytes) : -1
  let cpOffset = checkpoint ? checkpoint.position % geometry.segmentBytes : 0
  if (checkpoint && cpOffset < SEGMENT_HEADER_BYTES && cpSegment > 0 && ids.includes(cpSegment - 1)) {
    cpSegment -= 1
    cpOffset = geometry.segmentBytes
  }
  if (checkpoint && checkpoint.seq > 0 && !(await logReaches(layer, home, located.has(cpSegment) ? await copiesOf(cpSegment) : undefined, cpSegment, cpOffset))) {
    // The newest segments may sit on a pool volume that is not there right now (unmounted
    // disk, renamed directory): rebuilding without them would quietly go back in time.
    const record = (await index.segments()).get(cpSegment)
    const away = (record?.volumes ?? []).map(v => { try { return home.dirOf(v) } catch { return v } }).filter(dir => !fs.existsSync(dir))
    if (away.length > 0 && !located.has(cpSegment)) {
      throw new LogdiskError('NOT_FOUND', `the newest data (segment ${cpSegment}) is on pool volume ${away.join(', ')}, which is missing; bring it back before opening the store (nothing was changed)`)
    }
    // The index checkpoint is committed only after the log it covers was synced, so a local
    // segment it names that is gone or shorter than it says lost flushed writes (a pool volume
    // emptied or replaced by an empty directory, files deleted, a copy taken while the store
    // was written). Rebuilding from what is left went back in time without a word: the index
    // was cleared, lost blocks read as zeros, the new log reused the lost segments' ids, and
    // verify could say ok (a hostile test, helper-75). Refused instead, changing nothing; the
    // user may give the loss up explicitly. (A segment backing storage holds keeps the old way.)
    if (record !== undefined && record.state !== 'archived' && record.archived !== true && !inArchive.has(cpSegment)) {
      const what = located.has(cpSegment) ? `its copy on ${(located.get(cpSegment) ?? []).map(v => { try { return home.dirOf(v) } catch { return v } }).join(', ')} ends before that` : 'no pool volume holds a copy of it'
      throw new LogdiskError('CORRUPT', `the index says the log reaches offset ${cpOffset} of segment ${cpSegment}, but ${what}: flushed writes are missing (a pool volume emptied or replaced, segment files deleted?); bring them back and open again (nothing was changed), or, to give them up and rebuild the index from the log that is left, move ${path.join(storeDir, 'index')} aside`)
    }
    log.warn({ checkpoint }, 'the index is ahead of the log (segments missing or shortened); rebuilding the index from the log')
    checkpoint = undefined
  }
  let batch = new IndexBatch()
  if (!checkpoint) {
    await index.clear()
    report.rebuiltIndex = ids.length > 0
    // The baseline holds what is older than the log: it goes in first, the log on top of it.
    const baseline = await readBaselineIndex(layer, storeDir, geometry.uuid)
    for (const b of baseline?.blocks ?? []) {
      map.set(b.block, BASELINE_BASE + b.block * geometry.blockBytes, b.crc, b.seq)
      batch.addBlock(b.block, b.seq, BASELINE_BASE + b.block * geometry.blockBytes, b.crc)
    }
    if (baseline) report.rebuiltIndex = true
    report.blockMap = { from: 'log', why: opts.savedMap && 'saved' in opts.savedMap ? 'the index is rebuilt from the log' : opts.savedMap?.why }
    if (opts.savedMap && 'saved' in opts.savedMap) await opts.savedMap.saved.deferred?.release()
  } else {
    const why = await loadSavedMap(map, opts.savedMap, geometry, checkpointAtOpen, !!opts.readOnly, async why => {
      // The deferred table failed its checks when a command needed it: the index, as at open.
      report.blockMap = { from: 'index', why }
      log.warn({ why }, 'deferred block map refused; reading it from the index history')
      const fresh = new BlockMap()
      await index.loadNewest(fresh)
      return fresh
    })
    if (why === undefined) {
      report.blockMap = { from: 'saved' }
      log.info({ blocks: map.count, checkpoint: checkpointAtOpen, deferred: !map.isLoaded }, 'block map loaded from the map saved at the last clean close')
    } else {
      report.blockMap = { from: 'index', why }
      log.info({ why }, 'block map read from the index history')
      await index.loadNewest(map)
    }
  }
  // A store closed cleanly left its whole log in the index and synced (Store.close), and
  // recorded so: only a crash leaves entries of its own past that checkpoint. `cp -a A B`
  // gives B A's identity, so B's pool volumes are A's directories; B, taken for A moved while
  // A was away, claimed them (their owner record names B) and appended to A's segment files
  // and made new ones there (helper-62's sequence). Replayed, A's image quietly held B's
  // writes. So entries past a clean close in a directory another store directory has claimed
  // since (identity.ts claimedByOther) are not this store's: a read-only open stops there (a
  // copy reads as it was copied while its original writes on: helper-69's D2), an open that
  // writes is refused with nothing changed, or cuts them with dropCopyWrites. Elsewhere they
  // are replayed as before: an index put back from a backup, or a backup of the whole store
  // restored under another name, leaves its own later entries there (helper-69's D1). An open
  // that writes removes the record before it appends: a crash's own tail replays.
  const cleanClose = checkpoint !== undefined ? await index.cleanClose() : undefined
  const closedAt = cleanClose !== undefined && cleanClose.seq === checkpoint?.seq ? cleanClose : undefined
  /** Per volume directory: who else claimed it (claimedByOther), read once. */
  const claims = new Map<string, { by: string, live: boolean } | undefined>()
  const own = closedAt !== undefined ? ownPlaces(storeDir) : []
  const here = closedAt !== undefined ? locationOf(storeDir) : undefined
  /** The other store directory that claimed a directory holding a copy of segment `s` (see above). */
  const claimedBy = (s: Segment): { by: string, live: boolean } | undefined => {
    for (const v of s.volumes) {
      if (v === CACHE_VOLUME) continue
      const dir = home.dirOf(v)
      if (!claims.has(dir)) claims.set(dir, claimedByOther(dir, here!, geometry.uuid, own))
      const claim = claims.get(dir)
      if (claim !== undefined) return claim
    }
    return undefined
  }
  const snapshots = new SnapshotTable(await index.snapshots(), await index.counter(HIGHEST_VOLUME_ID), await index.counter(HIGHEST_VOLUME_ID_SEQ), await index.resizes())
  let horizon = await index.counter(HISTORY_HORIZON)

  let seq = checkpoint?.seq ?? 0
  const startSegment = checkpoint && checkpoint.seq > 0 ? cpSegment : (ids[0] ?? 0)
  let startOffset = checkpoint && checkpoint.seq > 0 ? cpOffset : SEGMENT_HEADER_BYTES
  if (startOffset < SEGMENT_HEADER_BYTES) startOffset = SEGMENT_HEADER_BYTES

  const scanned: number[] = []
  /** Segments after the log's end (a torn tail, an unreadable header): set aside after the scan. */
  const aside: number[] = []
  /** Where the scan found the log torn: the segment is cut there after the scan, after the set-asides. */
  let tornAt: { segment: Segment, offset: number, bytes: number, reason: string } | undefined
  /** The store directory whose writes past this store's clean close the cut drops (dropCopyWrites). */
  let droppedCopyWrites: string | undefined
  let current: Segment | undefined
  let stop = false
  /** The highest `durableSeq` a valid entry read so far records (see `durability`). */
  let durableSeen = 0
  /**
   * A `durability` read found no entry recording it up to the end of the log (an older
   * release's log): every later spot would read a part of that, so it is not read again.
   */
  let unrecordedAhead = false

  const toScan = ids.filter(i => i >= startSegment)
  // After damage or recycled segments, the next readable entry continues the log; a full
  // rebuild starts wherever the oldest kept segment starts.
  let acceptGap = !checkpoint
  /**
   * A segment with no entry ended cleanly while a gap was accepted (the oldest kept segment,
   * or one after recycled segments or damage): a gap right after it is still what recycling
   * left when the log records the entry just before the next one found as flushed (a crash
   * left an empty segment and compaction later recycled the ones before it); an unflushed
   * one is a torn tail (its appends lost before their sync), as below.
   */
  let acceptFlushedGap = false
  // Replaying past a checkpoint, every segment scanned was written after the last full sync
  // (sealed segments are synced by the next flush or checkpoint, not when they fill), so a
  // crash may have torn any of them: the first bad entry is the end of the log. A full
  // rebuild also reads old, long-synced segments: there only the last one can be torn.
  const replaying = checkpoint !== undefined
  // Segments at the end that hold no entry (made ahead of their roll, next-segment.ts, or a
  // roll a crash interrupted) do not make the one before them sealed: in a full rebuild, the
  // last segment holding entries is where a crash tore the log, as if it were the last one.
  // A segment whose header never became durable is no later end either: a roll the crash
  // interrupted after some of the new segment's entry pages reached the disk (a page cache
  // writes back in any order) leaves bytes there, but the log still ends in the one before.
  let lastWithEntries = -1
  if (!replaying) {
    for (let i = toScan.length - 1; i >= 0; i--) {
      if (await holdsEntries(layer, home, located.get(toScan[i]) ?? [], toScan[i], geometry)) { lastWithEntries = toScan[i]; break }
    }
  }
  /** Directories holding copies of the segments replay synced (see below the loop). */
  const replayedDirs = new Set<string>()
  /** Segments replay read nothing from whose fdatasync fails READ_ONLY (a filesystem read-only after errors): not synced again. */
  const unsyncable = new Set<number>()
  for (const id of toScan) {
    const isLast = replaying || id === toScan[toScan.length - 1]
    /** Where valid entries end here, the log may end (a torn tail), not only be damaged. */
    const endsLog = isLast || id >= lastWithEntries
    if (stop) {
      aside.push(id)
      continue
    }
    // Compaction recycles segments: a missing id is a gap in the log, not damage.
    if (scanned.length > 0 && id !== scanned[scanned.length - 1] + 1) acceptGap = true
    let segment: Segment
    try {
      segment = await Segment.open(layer, home, await copiesOf(id), id, geometry, log, onDropped(id))
    } catch (err) {
      // An unreadable header: damage if the log records that a flush made the entry after
      // the last one read durable (a flush syncs every segment up to the current one, header
      // included), else a segment made ahead whose header was never synced (next-segment.ts):
      // the log ends before it. Without a record (older releases), only a full rebuild's
      // segment with entries after it is damage.
      const known = await durability(seq + 1, id)
      if (known === 'flushed' || (known === 'unknown' && !isLast && !endsLog)) {
        damaged(id, 0, (err as Error).message)
        scanned.push(id)
        continue
      }
      // The segment's header never became durable: a torn roll. Keep it aside, stop here
      // (unless its header is intact and names another store: then nothing moves).
      await refuseForeign(layer, home, located.get(id)!, id, geometry)
      if (!opts.readOnly && !await holdsEntries(layer, home, located.get(id)!, id)) {
        // No byte past a header: a segment made ahead whose header was not synced yet
        // (segment.ts create), cut short by the crash. It never held anything to keep.
        log.info({ segment: id, err: (err as Error).message }, 'removed an unfinished segment made ahead (no entry in it)')
        await removeUnfinished(layer, home, located.get(id)!, id)
        report.unfinishedSegments = [...(report.unfinishedSegments ?? []), id]
        stop = true
        continue
      }
      log.warn({ segment: id, err: (err as Error).message }, 'segment header unreadable; treating it as a torn tail')
      aside.push(id)
      stop = true
      continue
    }
    scanned.push(id)
    if (current) await current.close()
    current = segment
    // Entries scanned, not applied yet: the first has bad block data (a "suspect"), and the
    // rest follow it closer than a group commit's writevs in flight reach. A crash tears the
    // end of the log; with several writevs of a group in flight, a later one may be whole on
    // disk while an earlier one is torn, so bad data followed only by entries within that
    // reach is a torn tail too (cut there: the entries after it were never flushed). Bad data
    // with valid entries further on is damage inside the log (kept, its blocks read CORRUPT).
    const held: ScannedEntry[] = []
    const reach = inFlightBytes(geometry.blockBytes)
    const lastSeq = (e: ScannedEntry): number => e.header.kind === EntryKind.free ? e.header.block : e.header.seq
    /** Applies held entries up to the next suspect that `offset` is still within reach of. */
    const release = (offset: number): void => {
      while (held.length > 0 && (held[0].badBlocks.length === 0 || offset >= held[0].offset + reach)) apply(held.shift()!)
    }
    const offset = id === startSegment ? startOffset : SEGMENT_HEADER_BYTES
    /** Where each entry scanned here starts, and its sequence number (see rewriteUnflushed). */
    const starts: Array<[offset: number, seq: number]> = []
    for await (const item of scanSegment(segment.handle, offset, geometry.blockBytes, true)) {
      const claim = item.type === 'entry' && closedAt !== undefined ? claimedBy(segment) : undefined
      if (item.type === 'entry' && claim !== undefined) {
        const what = `entry ${item.header.seq} at ${item.offset} of ${segment.file}`
        const by = claim.by
        if (opts.readOnly) {
          log.warn({ segment: segment.id, offset: item.offset, by }, `the log goes on past this store's last clean close in a pool volume directory ${by} wrote to since; read as it was at that close`)
          await cut(item.offset, `written by ${by} past this store's clean close at entry ${closedAt!.seq} (${what})`)
          if (report.cut) report.cut.by = by // not torn: said apart (status)
          break
        }
        if (opts.dropCopyWrites !== true) {
          const way = claim.live
            ? `Give that copy its own identity first (logdisk adopt ${by}: it keeps what it wrote), then drop its writes from this store with: logdisk pool repair ${storeDir} --drop-copy-writes (they go to lost+found)`
            : `No store with this identity is at ${by} now (removed, or adopted: its own writes went with it). If this store lived at ${by} under that name, they are its own: move ${path.join(storeDir, 'index')} aside and the next command rebuilds the index from the log with them; if not, drop them with: logdisk pool repair ${storeDir} --drop-copy-writes (they go to lost+found)`
          throw new LogdiskError('IDENTITY', `${storeDir} was closed cleanly with its log ending at entry ${closedAt!.seq}, but the log goes on (${what}) in a pool volume directory that ${by} claimed since: another copy with this store's identity (${geometry.uuid}) wrote there; nothing was changed. ${way}`)
        }
        droppedCopyWrites = by
        await cut(item.offset, `the store at ${by}, a copy of this one, wrote past its clean close at entry ${closedAt!.seq} (${what}); dropped as asked (--drop-copy-writes)`)
        break
      }
      // Entries past the checkpoint go into the map: a deferred one is read first.
      if (item.type === 'entry' && !map.isLoaded) await map.loaded()
      if (item.type === 'entry') starts.push([item.offset, lastSeq(item)])
      const expected = (held.length > 0 ? lastSeq(held[held.length - 1]) : seq) + 1
      if (item.type === 'entry') durableSeen = Math.max(durableSeen, item.header.durableSeq ?? 0)
      const gap = item.type === 'entry' && item.header.seq !== expected && !(acceptGap && item.header.seq > seq)
      if (gap && acceptFlushedGap && held.length === 0 && item.header.seq > seq && (await durability(item.header.seq - 1, segment, item.offset)) === 'flushed') {
        log.info({ segment: id, expected, found: item.header.seq }, 'entries before an empty segment were recycled; the log continues here')
      } else if (gap) {
        const reason = `sequence gap (expected ${expected}, found ${item.header.seq})`
        // Entries missing right before a segment's first one: the tail of the segment before
        // it, which a crash lost before its sync (see the end of a segment below).
        const lostTail = item.offset === SEGMENT_HEADER_BYTES && item.header.seq > expected
        // The missing entry `expected`: lost unflushed (a torn write) unless the log says a
        // flush had made it durable. Without a record (older releases), the older rules.
        const known = held.length === 0 ? await durability(expected, segment, item.offset) : 'unknown'
        if (known === 'unflushed' || (known === 'unknown' && (endsLog || lostTail))) {
          release(item.offset)
          await cut(held.length > 0 ? held[0].offset : item.offset, held.length > 0 ? `block checksum mismatch in entry seq ${held[0].header.seq}, followed by a ${reason}` : `${reason}${known === 'unflushed' ? UNFLUSHED : ''}`)
        } else {
          release(Infinity)
          damaged(id, item.offset, reason)
        }
        break
      }
      if (item.type === 'entry') {
        acceptGap = false
        acceptFlushedGap = false
        if (held.length === 0 && item.badBlocks.length > 0) {
          // Bad data in a flushed entry is bit rot: kept, its blocks read CORRUPT. In an
          // entry no flush covered, it is a write the power loss tore (a page cache writes
          // back in any order, so entries after it may be whole): the log ends before it.
          const known = await durability(item.header.seq, segment, item.offset + entryBytes(item.header))
          if (known === 'unflushed') {
            await cut(item.offset, `block checksum mismatch in entry seq ${item.header.seq}${UNFLUSHED}`)
            break
          }
          if (known === 'flushed') {
            apply(item)
            continue
          }
        }
        held.push(item)
        release(item.offset)
        continue
      }
      // End of the segment's valid entries. Only the end of the log can be torn by a crash:
      // anything wrong before it is damage, reported and left in place, never cut. But a file
      // that ends inside an entry was never written whole: in a full rebuild, a sealed
      // segment that a crash cut before its sync (sealed segments sync in log order, so
      // every later one was unsynced too). That is where the log ends, as for the last one.
      // An unreadable entry with segments after it: what the log records of the entry that
      // should be there (the next seq) decides between damage and a torn write, as above.
      const known = item.torn !== undefined && held.length === 0 && id < toScan[toScan.length - 1] ? await durability(seq + 1, segment) : 'unknown'
      if (known === 'flushed' || (known === 'unknown' && !endsLog && item.truncated !== true)) {
        release(Infinity)
        // A clean end: the next segment continues right after it, even when this one held no
        // entry (its appends all lost before their sync: a gap there ends the log, above).
        if (item.torn) damaged(id, item.offset, item.torn)
        else {
          acceptFlushedGap ||= acceptGap && !replaying
          acceptGap = false
        }
        segment.tail = item.offset
      } else if (held.length > 0) {
        const suspect = held[0]
        await cut(suspect.offset, `block checksum mismatch in entry seq ${suspect.header.seq}${held.length > 1 ? `, followed only by entries a group commit may have written at the same time (${held.length - 1})` : ', the last one'}`)
      } else if (item.torn) {
        await cut(item.offset, known === 'unflushed' ? `${item.torn}${UNFLUSHED}` : item.torn)
      } else {
        segment.tail = item.offset
      }
    }
    // Replay read the first copy; a power loss may have left another copy with other bytes
    // at the same length (each copy keeps its own unsynced pages): they get the first's.
    // Up to a cut decided here only (willCutAt): the torn bytes after it go when the cut is made.
    if (!opts.readOnly && segment.handle instanceof MirroredHandle) await segment.handle.matchCopies(offset)
    if (!opts.readOnly) {
      try {
        await rewriteUnflushed(segment, starts, durableSeen)
      } catch (err) {
        // Its pool volume became read-only (a filesystem remounted so after errors, or by
        // hand): nothing there can be written again, so a write-back that failed there cannot
        // be repaired either. Read as it is; a current segment there is sealed at open.
        if (!isLogdiskError(err, 'READ_ONLY')) throw err
        log.warn({ segment: id, err: (err as Error).message }, 'a segment on a read-only pool volume: its unflushed entries cannot be written again there; read as it is')
        ;(report.readOnlySegments ??= []).push(id)
      }
    }
    // The index may only point at durable bytes: a sealed segment is not synced when it
    // fills (the next flush does that), so replay syncs what it read before indexing it.
    try {
      await segment.handle.datasync()
      if (!opts.readOnly) for (const v of segment.volumes) if (v !== CACHE_VOLUME) replayedDirs.add(home.dirOf(v))
    } catch (err) {
      // An ext4 gone read-only after errors (errors=remount-ro) keeps files open for writing
      // and fails every fdatasync with EROFS. When replay read nothing here (the checkpoint
      // made everything before it durable; a segment made ahead holds no entry), nothing needs
      // to be: read it as it is, and appends go to a new segment. Entries read past the
      // checkpoint may never reach the disk: the open fails (make the filesystem writable again).
      if (!isLogdiskError(err, 'READ_ONLY') || starts.length > 0) throw err
      unsyncable.add(id)
      if (report.readOnlySegments?.includes(id) !== true) {
        log.warn({ segment: id, err: (err as Error).message }, 'a segment on a pool volume that refuses fdatasync (read-only after errors): read as it is, and appends go to a new segment')
        ;(report.readOnlySegments ??= []).push(id)
      }
    }
    if ((await copiesOf(id))[0] === CACHE_VOLUME) await markLocallyFreed(id)
    if (batch.history.length >= REPLAY_COMMIT_BLOCKS) await commit(segment)

    async function cut (offset: number, reason: string): Promise<void> {
      const bytes = (await segment.handle.size()) - offset
      if (opts.readOnly) {
        // Seen, not cut: the log ends here for this open; the next open that writes cuts it.
        segment.tail = offset
        report.cut = { segment: id, offset, bytes, reason, savedTo: '' }
        stop = true
        return
      }
      // Decided here, made after the segments past it are set aside (below the loop).
      if (segment.handle instanceof MirroredHandle) segment.handle.willCutAt(offset)
      segment.tail = offset
      tornAt = { segment, offset, bytes, reason }
      stop = true
    }
  }
  // What the scan decided is made last, newest first: the segments after the log's end go
  // aside, then the torn segment is cut. An open that fails part way (a full store
  // filesystem, a volume gone read-only) then leaves the spot where the log was found torn as
  // it was, so the next open decides the same. Oldest first, a set-aside left a gap before
  // segments still there, and the next open read those as the log going on after a recycled
  // one (a hostile test's D1); a cut made first left a clean end for the next open to read
  // the segments after it against.
  for (const id of [...aside].reverse()) {
    report.orphanedSegments.unshift(await moveAside(layer, storeDir, home, located.get(id)!, segmentFileName(id), id, geometry, opts))
  }
  if (tornAt !== undefined) {
    const { segment, offset, bytes, reason } = tornAt
    const savedTo = await saveTail(layer, storeDir, segment, offset, bytes)
    await segment.handle.truncate(offset)
    await segment.handle.datasync()
    report.cut = { segment: segment.id, offset, bytes, reason, savedTo, ...(droppedCopyWrites !== undefined ? { by: droppedCopyWrites, copyWrites: true as const } : {}) }
    log.warn(report.cut, droppedCopyWrites !== undefined ? 'dropped the entries another copy of this store wrote past its last clean close; their bytes were kept in lost+found' : 'cut a torn or damaged log tail; its bytes were kept aside')
  }

  /**
   * What the log records of entry `s`, which is bad or missing at a spot where valid entries
   * of the log may follow. 'flushed': a valid entry says a flush had made entries up to `s` or
   * later durable before it was written (wherever it is: a free header written in place
   * counts), so whatever is wrong at `s` happened to flushed bytes: damage, never cut.
   * 'unflushed': entries after the spot record what was durable and none covers `s`: no
   * flush had made it durable, the power loss tore it, and every entry after it was
   * unflushed too: a torn tail. 'unknown': nothing after the spot records it (entries of an
   * older release, or none at all): the older rules decide. Reads from `offset` of `here`
   * (undefined: its rest is unreadable; an id: the segment could not be opened) through the
   * later segments until an entry decides.
   */
  async function durability (s: number, here: Segment | number, offset?: number): Promise<'flushed' | 'unflushed' | 'unknown'> {
    let recorded = false
    const covers = (h: EntryHeader): boolean => {
      if (h.durableSeq !== undefined) recorded = true
      durableSeen = Math.max(durableSeen, h.durableSeq ?? 0)
      return durableSeen >= s
    }
    if (durableSeen >= s) return 'flushed'
    if (unrecordedAhead) return 'unknown'
    if (offset !== undefined && typeof here !== 'number' && await anyOf(here.handle, offset, covers)) return 'flushed'
    const hereId = typeof here === 'number' ? here : here.id
    for (const id of toScan.filter(i => i > hereId)) {
      let later: Segment
      try {
        later = await Segment.open(layer, home, await copiesOf(id), id, geometry, log)
      } catch {
        continue // a refused header: the replay itself says what it is
      }
      try {
        if (await anyOf(later.handle, SEGMENT_HEADER_BYTES, covers)) return 'flushed'
      } finally {
        await later.close()
      }
    }
    unrecordedAhead = !recorded
    return recorded ? 'unflushed' : 'unknown'
  }

  /** Whether `test` holds for one of the valid entries of a segment from `offset` (block data not checked). */
  async function anyOf (handle: Segment['handle'], offset: number, test: (h: EntryHeader) => boolean): Promise<boolean> {
    for await (const item of scanSegment(handle, offset, geometry.blockBytes, false)) {
      if (item.type === 'end') return false
      if (test(item.header)) return true
    }
    return false
  }

  function damaged (segment: number, offset: number, reason: string): void {
    report.damaged.push({ segment, offset, reason })
    log.error({ segment, offset, reason }, 'damage inside the log (not at its end): left in place; entries past it in that segment are unreadable; run logdisk verify')
    acceptGap = true
  }

  /**
   * An archived segment was scanned from its fetched copy (whole history); its local copy
   * may have had runs freed and punched since. Those entries are marked freed in the index,
   * so that compaction never writes a shorter free header over a run the local file already
   * skips (that would strand punched bytes inside the local log).
   */
  async function markLocallyFreed (id: number): Promise<void> {
    const local = await localOfArchived(id)
    if (local.length === 0) return
    let one: Segment
    try {
      one = await Segment.open(layer, home, local, id, geometry, log)
    } catch {
      return // no readable local copy: nothing of it to respect
    }
    try {
      for await (const item of scanSegment(one.handle, SEGMENT_HEADER_BYTES, geometry.blockBytes, false)) {
        if (item.type === 'end') break
        if (item.header.kind !== EntryKind.free) continue
        for (let s = item.header.seq; s <= item.header.block; s++) {
          const e = batch.entries.get(s)
          if (e) batch.entries.set(s, { ...e, freed: true })
        }
      }
    } finally {
      await one.close()
    }
  }

  /** The baseline already holds this very version: a log copy is only waiting to be freed. */
  function inBaseline (block: number, seq: number): boolean {
    return map.position(block) >= BASELINE_BASE && map.seq(block) === seq
  }

  /**
   * Blocks [first, first+count) trimmed at `seq`, held by the segment being scanned: of the
   * entries that list a trimmed version (its trim entry, trim moves), the last in the log holds it.
   */
  function trimmed (first: number, count: number, seq: number): void {
    const holder = trimHolder(scanned[scanned.length - 1])
    for (let block = first; block < first + count; block++) {
      map.set(block, TRIMMED, 0, seq)
      batch.addBlock(block, seq, TRIMMED, holder)
    }
  }

  function apply (entry: ScannedEntry): void {
    const h = entry.header
    report.replayedEntries++
    if (h.kind === EntryKind.free) {
      seq = h.block // the run's last sequence number: nothing in it is indexed any more
      if (h.payloadCrc !== FREE_HORIZON_IN_MARKER) {
        // A format-1 run: no marker says what it gave up; keep the horizon past it at least.
        horizon = Math.max(horizon, h.block)
        batch.counters.set(HISTORY_HORIZON, horizon)
      }
      return
    }
    seq = h.seq
    const position = scanned[scanned.length - 1] * geometry.segmentBytes + entry.offset
    if (h.kind === EntryKind.write) {
      const dataStart = position + ENTRY_HEADER_BYTES + h.count * BLOCK_CRC_BYTES
      for (let i = 0; i < h.count; i++) {
        const crc = entry.table.readUInt32LE(ENTRY_HEADER_BYTES + i * BLOCK_CRC_BYTES)
        const at = dataStart + i * geometry.blockBytes
        if (inBaseline(h.block + i, h.seq)) continue
        map.set(h.block + i, at, crc, h.seq)
        batch.addBlock(h.block + i, h.seq, at, crc)
      }
    } else if (h.kind === EntryKind.trim) {
      trimmed(h.block, h.count, h.seq)
    } else if (h.kind === EntryKind.trimMove) {
      for (let r = 0; r < h.count; r++) {
        const run = trimRunAt(entry.table, r)
        trimmed(run.block, run.count, run.seq)
      }
    } else if (h.kind === EntryKind.move) {
      const dataStart = position + tableBytes(h)
      for (let i = 0; i < h.count; i++) {
        const v = moveRecordAt(entry.table, i)
        const at = dataStart + i * geometry.blockBytes
        if (inBaseline(v.block, v.seq)) continue
        map.set(v.block, at, v.crc, v.seq)
        batch.addBlock(v.block, v.seq, at, v.crc) // the version, now here
      }
    }
    if (entry.badBlocks.length > 0) log.error({ seq: h.seq, position, badBlocks: entry.badBlocks }, 'damaged blocks in the log; reads of them will fail with EIO')
    const payload = holdsVersions(h.kind) ? undefined : unpack(entry.payload!) as Record<string, unknown>
    batch.entries.set(h.seq, { kind: h.kind, timeMs: h.timeMs, position, block: h.block, count: h.count, payload, ...(payload ? { bytes: entryBytes(h) } : {}) })
    if (h.kind === EntryKind.history && typeof payload?.horizon === 'number') {
      // The log keeps the horizon, so a rebuilt index never promises history compaction freed.
      horizon = Math.max(horizon, payload.horizon)
      batch.counters.set(HISTORY_HORIZON, horizon)
    }
    if (payload) {
      for (const [cut, record] of snapshots.apply(h.kind, h.seq, position, h.timeMs, payload)) batch.snapshots.set(cut, record)
      batch.counters.set(HIGHEST_VOLUME_ID, snapshots.highestId)
      batch.counters.set(HIGHEST_VOLUME_ID_SEQ, snapshots.highestIdSeq)
      const resized = snapshots.applyResize(h.kind, h.seq, payload)
      if (resized) batch.resizes.set(resized.seq, resized)
    }
  }

  /**
   * Gives `segment` (the current one, holding no entry) a copy on each volume its home places
   * it on now, with its header page, synced before anything is appended; returns it opened
   * there and the volumes whose copies then go. Left as it is when the home has no room.
   */
  async function refitEmpty (segment: Segment): Promise<{ segment: Segment, off: string[] }> {
    const { id } = segment
    const had = segment.volumes
    let placed: string[] = []
    const made: string[] = []
    try {
      placed = await home.place(id)
      const header = Buffer.alloc(SEGMENT_HEADER_BYTES)
      await readUpTo(segment.handle, header, 0)
      for (const v of placed.filter(v => !had.includes(v))) {
        const dir = home.dirOf(v)
        await layer.mkdirp(dir)
        const file = path.join(dir, segmentFileName(id))
        made.push(file)
        const h = await layer.open(file, true)
        try {
          await h.truncate(0)
          await h.writev([header], 0)
          await h.datasync()
        } finally {
          await h.close()
        }
        await layer.syncDir(dir)
      }
    } catch (err) {
      for (const file of made) await layer.remove(file).catch(() => undefined)
      home.vacated(id, placed.filter(v => !had.includes(v)))
      log.warn({ segment: id, volumes: had, err: (err as Error).message }, 'the current segment has fewer copies than the pool asks and could not be given more; logdisk pool repair adds them')
      return { segment, off: [] }
    }
    await segment.close()
    const refitted = await Segment.open(layer, home, placed, id, geometry, log, onDropped(id))
    refitted.tail = SEGMENT_HEADER_BYTES
    located.set(id, placed)
    chosen.set(id, placed)
    const record = records.get(id)
    if (record !== undefined) records.set(id, { ...record, volumes: placed })
    log.info({ segment: id, from: had, to: placed }, 'the current segment (no entry in it yet) was given the copies the pool places it on')
    return { segment: refitted, off: had.filter(v => !placed.includes(v)) }
  }

  async function commit (segment: Segment): Promise<void> {
    // Index entries may only point at durable log bytes (nothing was read from an unsyncable one).
    if (!unsyncable.has(segment.id)) await segment.handle.datasync()
    await index.commit(batch, { seq, position: segment.id * geometry.segmentBytes + segment.tail, timeMs: Date.now() })
    batch = new IndexBatch()
  }

  // The names of the segments replayed: the process before may have made one ahead (its
  // directory's fsync left to its first sync, next-segment.ts) and died before any flush, and
  // the flushes after this open will say its entries are durable. Once every segment
  // replayed is synced: an fsync of a directory makes every name in it durable, and a name
  // must not outlive a crash without its header (a segment made ahead and not replayed yet).
  for (const dir of replayedDirs) await layer.syncDir(dir)
  // A segment made ahead of its roll is created one copy after the other (next-segment.ts): a
  // kill -9 in between left it on fewer volumes than the mirror policy asks, and taken as the
  // current segment, every write after the open had one copy until a pool repair (helper-75's
  // D2). It holds no entry yet, so it gets the copies its home would place now first.
  /** Copies of the current segment off the volumes it was refitted to: removed once the index names those. */
  let refitOff: string[] = []
  if (current && !opts.readOnly && current.tail === SEGMENT_HEADER_BYTES && !current.volumes.includes(CACHE_VOLUME) &&
    report.readOnlySegments?.includes(current.id) !== true && !home.stillSuits(current.volumes)) {
    ;({ segment: current, off: refitOff } = await refitEmpty(current))
  }
  if (!current) {
    const id = ids.length > 0 ? ids[ids.length - 1] + 1 : 0
    current = await Segment.create(layer, home, await home.place(id), id, geometry, log, onDropped(id))
    located.set(id, current.volumes)
    chosen.set(id, current.volumes)
    scanned.push(id)
  }
  for (const id of scanned) {
    // A record keeps what it knows (copies that should exist, the archived flag); only the
    // state follows from the scan.
    const record = records.get(id)
    const local = (chosen.get(id) ?? []).filter(v => v !== CACHE_VOLUME)
    const fetched = chosen.get(id)?.[0] === CACHE_VOLUME
    const volumes = record?.volumes ?? (local.length > 0 ? local : fetched ? await localOfArchived(id) : await upToDate(located.get(id) ?? [], id))
    const archived = record?.archived ?? (inArchive.has(id) || undefined)
    // An archived segment with no local copy stays archived: its fetched copy was for the scan.
    const state = id === current.id ? 'current' : archived && volumes.length === 0 ? 'archived' : !record || record.state === 'current' ? 'active' : record.state
    batch.segments.set(id, { ...record, state, volumes, archived })
  }
  await commit(current)
  if (refitOff.length > 0) {
    // The index names the new copies now; one left (a failed removal) is removed by the next open.
    await removeUnfinished(layer, home, refitOff, current.id).catch(err => log.warn({ segment: current!.id, volumes: refitOff, err: (err as Error).message }, 'could not remove a copy the current segment left'))
    home.vacated(current.id, refitOff)
  }
  return { segments: scanned, current, seq, report, snapshots, located, chosen, ...(cleanClose !== undefined ? { cleanClose: true } : {}) }
}

/** Bytes per read and write of rewriteUnflushed. */
const REWRITE_CHUNK_BYTES = 1024 * 1024

/**
 * Writes the segment's entries that no flush is recorded to have made durable (sequence above
 * `durable`) again, in place, before replay syncs them. They may be writes whose write-back
 * failed in the process before this one: Linux reports that once and marks the pages clean,
 * so they are in the page cache, and read back fine here, but not on the disk, and an
 * fdatasync now would succeed without writing them (PostgreSQL's "fsyncgate"). Written again,
 * the pages are dirty and the sync writes them. `starts` lists each entry's offset and
 * sequence number in log order; the rewrite ends at the segment's tail (after any cut).
 * Reading and writing back a segment's header page and unflushed tail costs little when
 * replay starts at a checkpoint (what was written since). A full rebuild rewrites every
 * segment's header page, and of a store whose entries record no `durableSeq` (written by
 * releases before store format 3) every entry it reads.
 */
async function rewriteUnflushed (segment: Segment, starts: ReadonlyArray<[number, number]>, durable: number): Promise<void> {
  // The header too: the failed fdatasync may have been a segment's first (one made ahead).
  await rewriteRange(segment, 0, SEGMENT_HEADER_BYTES)
  const first = starts.find(([, s]) => s > durable)
  if (first !== undefined && first[0] < segment.tail) await rewriteRange(segment, first[0], segment.tail)
}

/** Reads [from, to) of the segment and writes it back in place (see rewriteUnflushed). */
async function rewriteRange (segment: Segment, from: number, to: number): Promise<void> {
  const buf = Buffer.allocUnsafe(Math.min(REWRITE_CHUNK_BYTES, to - from))
  for (let at = from; at < to; at += buf.length) {
    const n = Math.min(buf.length, to - at)
    const got = await readUpTo(segment.handle, buf.subarray(0, n), at)
    if (got < n) throw new LogdiskError('CORRUPT', `${segment.file} ends at ${at + got}, before ${to}`)
    await segment.handle.writev([buf.subarray(0, n)], at)
  }
}

/**
 * Loads a saved block map into `map` when it reflects `checkpoint`; else says why not (map
 * untouched). A read-only open defers a table that was not read yet when the stamp gives the
 * counts: `map` then reads it when first needed, and `fallBack` (the index) if it fails there.
 */
async function loadSavedMap (map: BlockMap, taken: TakenBlockMap | undefined, geometry: SegmentGeometry, checkpoint: Checkpoint | undefined, readOnly: boolean, fallBack: (why: string) => Promise<BlockMap>): Promise<string | undefined> {
  if (!taken) return 'no saved block map'
  if (!('saved' in taken)) return taken.why
  const saved = taken.saved
  const { stamp, base, delta, deferred } = saved
  const mismatch = stampMismatch(stamp, geometry, checkpoint)
  if (mismatch) {
    await deferred?.release()
    return `saved block map is stale: ${mismatch}`
  }
  if (deferred && readOnly && stamp.blocks !== undefined && stamp.trimmed !== undefined) {
    map.defer({ count: stamp.blocks, trimmed: stamp.trimmed, memoryBytes: stamp.slots * (saved.dense ? DENSE_ROW_BYTES : BLOCK_MAP_SLOT_BYTES) }, async () => {
      const read = await deferred.readTables()
      const fresh = new BlockMap()
      const refused = 'why' in read ? read.why : adoptSavedMap(fresh, saved, read.tables)
      if (refused !== undefined) return await fallBack(`saved block map refused: ${refused}`)
      if (fresh.count !== stamp.blocks || fresh.trimmed !== stamp.trimmed) return await fallBack(`saved block map refused: its stamp counts ${stamp.blocks} blocks (${stamp.trimmed} trimmed), its table ${fresh.count} (${fresh.trimmed})`)
      return fresh
    }, deferred.release)
    return undefined
  }
  let tables = saved.tables
  if (!tables && deferred) {
    const read = await deferred.readTables()
    if ('why' in read) return read.why
    tables = read.tables
  }
  const refused = adoptSavedMap(map, saved, tables)
  if (refused !== undefined) return `saved block map refused: ${refused}`
  // A write open's close saves what changes from here on, beside the delta's blocks, against
  // the base file (which takeBlockMap kept as blockmap.base).
  if (!readOnly) map.trackChanges(base, deltaLimit(tables!.positions.length), delta?.keys ?? [])
  return undefined
}

/** Segment files on every volume of the home: id -> volumes holding a copy. */
async function listSegments (layer: FileLayer, home: SegmentHome, log: Logger): Promise<Map<number, string[]>> {
  const out = new Map<number, string[]>()
  for (const volume of home.volumes()) {
    const dir = home.dirOf(volume)
    let names: string[]
    try {
      names = await layer.list(dir)
    } catch (err) {
      // A volume that never held this store's segments has no directory for them: normal. One
      // whose own directory is gone: the pool says so, and whether it held any (pool.ts).
      if (!isLogdiskError(err, 'NOT_FOUND')) {
        log.error({ volume, dir, err: (err as Error).message }, `pool volume directory ${dir} cannot be listed; its segments are unavailable`)
      }
      continue
    }
    for (const name of names) {
      const id = parseSegmentFileName(name)
      if (id === undefined) continue
      out.set(id, [...(out.get(id) ?? []), volume])
    }
  }
  return out
}

/**
 * Copies of one segment ordered by how far their valid log reaches (highest sequence number,
 * then furthest offset): a copy that fell behind (a failed write, a power loss between the
 * copies' writes) is a prefix of the others. Then, at the same reach, by how many entries
 * free headers cover: compaction writes them in place, on the copies still named, so a copy
 * dropped by one (its write failed, or it did not open) ends where the others end and differs
 * only there; it never gains one another copy lacks (a redo of pending headers writes the
 * same ones), so the copy with more is the later one. Taking the other brought back freed
 * entries, a deleted snapshot's marker among them (test/rebuild-dropped-copy.test.ts).
 */
async function byLogEnd (layer: FileLayer, home: SegmentHome, volumes: string[], id: number, geometry: SegmentGeometry): Promise<{ best: string[], behind: string[], reach?: Map<string, [seq: number, end: number, freed: number]> }> {
  if (volumes.length < 2) return { best: volumes, behind: [] }
  const reach = new Map<string, [seq: number, end: number, freed: number]>()
  for (const v of volumes) {
    let seq = -1
    let end = -1
    let freed = 0
    try {
      const one = await Segment.open(layer, home, [v], id, geometry)
      try {
        for await (const item of scanSegment(one.handle, SEGMENT_HEADER_BYTES, geometry.blockBytes, true)) {
          if (item.type === 'end') { end = item.offset; break }
          if (item.badBlocks.length > 0) { end = item.offset; break }
          seq = item.header.kind === EntryKind.free ? item.header.block : item.header.seq
          if (item.header.kind === EntryKind.free) freed += item.header.block - item.header.seq + 1
        }
      } finally {
        await one.close()
      }
    } catch { /* unreadable copy: last */ }
    reach.set(v, [seq, end, freed])
  }
  const ahead = (a: number[], b: number[]): boolean => a[0] !== b[0] ? a[0] > b[0] : a[1] !== b[1] ? a[1] > b[1] : a[2] > b[2]
  const top = [...reach.values()].reduce((m, r) => ahead(r, m) ? r : m)
  const best = volumes.filter(v => !ahead(top, reach.get(v)!))
  return { best, behind: volumes.filter(v => !best.includes(v)), reach }
}

/**
 * Rewrites the in-place header writes a crash may have torn (compaction's free headers;
 * pending-headers.ts): the same bytes again, on every copy still there, then synced. Before
 * a full rebuild too (`index` undefined): the record is also a file beside the index, so a
 * torn header is made whole before the scan reads it. An index written by an older release
 * holds it as its 'p' key alone (keys.ts). When a copy's pool volume is read-only, returns
 * the directory of it, and the record stays for later (compaction redoes it before it writes
 * any header of its own); undefined once nothing is pending.
 */
export async function redoPendingHeaders (layer: FileLayer, storeDir: string, home: SegmentHome, index: IndexDb | undefined, log: Logger, redone?: (segment: number) => Promise<void> | void): Promise<string | undefined> {
  const pending = (await index?.pending()) ?? await readPendingHeaders(layer, storeDir)
  if (!pending) return undefined
  for (const volume of pending.volumes) {
    let handle
    try {
      handle = await layer.open(path.join(home.dirOf(volume), segmentFileName(pending.segment)), false)
    } catch { // a volume no longer in the pool, or
      continue // moved, archived or recycled since: nothing to redo there
    }
    try {
      for (const [offset, bytes] of pending.headers) await handle.writev([Buffer.from(bytes)], offset)
      await handle.datasync()
    } catch (err) {
      // Its pool volume became read-only (a compaction failed there, or crashed before it
      // did): the writes wait, on record, for an open or a pass where it is writable again.
      // The index never took the entries they free, so the log reads as before meanwhile.
      if (!isLogdiskError(err, 'READ_ONLY')) throw err
      log.warn({ segment: pending.segment, volume, err: (err as Error).message }, 'header writes a compaction left are waiting: the pool volume is read-only')
      return home.dirOf(volume)
    } finally {
      await handle.close()
    }
  }
  log.warn({ segment: pending.segment, headers: pending.headers.length }, 'redid header writes that a crash interrupted')
  if (index !== undefined) {
    // The log holds these free entries now: the index must say so before the record goes.
    // The pass that recorded them stopped before its index took the entries they free, and a
    // later pass may judge a run's first entry otherwise (MarkerLife: a snapshot's deletion
    // marker whose segment was archived since, or a marker whose header is now this free
    // header, is kept); without the flags it then began its own run
    // at the next entry, inside this free entry, and punched it: a reader jumping over the
    // free header landed on the zeros (simulation seed 7600183: 'not an entry header', the
    // rest of the segment lost). Freed, those entries join the next pass's runs, and the
    // segment is recorded unpunched, so that pass punches what only these headers freed.
    const seqs: number[] = []
    for (const [, bytes] of pending.headers) {
      const h = decodeHeader(Buffer.from(bytes))
      if (h?.kind === EntryKind.free) for (let s = h.seq; s <= h.block; s++) seqs.push(s)
    }
    await index.markFreed(seqs)
    await redone?.(pending.segment)
  }
  await index?.clearPending()
  await clearPendingHeaders(layer, storeDir)
  return undefined
}

/**
 * Whether a copy of segment `id` is longer than its header (unreadable: assumed to). With
 * `geometry` (which segment ends the log in a full rebuild), only a copy whose header checks
 * out and whose first entry is readable counts: bytes behind a header that never became
 * durable are no entries of the log, and neither are bytes behind a durable header where no
 * entry begins. A page cache writes back in any order, so a power loss may keep a new
 * segment's header page and its length and none of its entry pages (zeros at its first
 * entry): counted as holding entries, it made the segment before it sealed, and the torn
 * unflushed last entry there was kept as damage (indexed with bad blocks, reads EIO) instead
 * of being cut (simulation seed 7310047, PAGES=1 REBUILDS=1; test/rebuild-torn-empty-next.test.ts).
 * A segment's first entry is the one every later entry there is read behind: with it
 * unreadable nothing in the segment can say the segment before was flushed.
 */
async function holdsEntries (layer: FileLayer, home: SegmentHome, volumes: string[], id: number, geometry?: SegmentGeometry): Promise<boolean> {
  for (const volume of volumes) {
    try {
      const handle = await layer.open(path.join(home.dirOf(volume), segmentFileName(id)), false)
      try {
        const size = await handle.size()
        if (size <= SEGMENT_HEADER_BYTES) continue
        if (geometry === undefined) return true
        if (await segmentHeaderProblem(handle, id, geometry) !== undefined) continue
        if (await firstEntryReadable(handle, geometry.blockBytes, size)) return true
      } finally {
        await handle.close()
      }
    } catch {
      return true
    }
  }
  return false
}

/** Whether a valid entry header (header and table checksums; block data not checked) begins right after the segment's header page. */
async function firstEntryReadable (handle: FileHandle, blockBytes: number, size: number): Promise<boolean> {
  for await (const item of scanSegment(handle, SEGMENT_HEADER_BYTES, blockBytes, false, size)) return item.type === 'entry'
  return false
}

/** Whether the segment holding the checkpoint exists and is at least that long. */
async function logReaches (layer: FileLayer, home: SegmentHome, volumes: string[] | undefined, segment: number, offset: number): Promise<boolean> {
  if (!volumes || volumes.length === 0) return false
  const handle = await layer.open(path.join(home.dirOf(volumes[0]), segmentFileName(segment)), false)
  try {
    return (await handle.size()) >= offset
  } finally {
    await handle.close()
  }
}

/** Copies the bytes of a cut tail to lost+found/ before the segment is truncated. */
async function saveTail (layer: FileLayer, storeDir: string, segment: Segment, offset: number, bytes: number): Promise<string> {
  const dir = path.join(storeDir, 'lost+found')
  await layer.mkdirp(dir)
  const file = path.join(dir, `${path.basename(segment.file)}@${offset}.${Date.now()}.bin`)
  const buf = Buffer.alloc(Math.max(0, bytes))
  if (bytes > 0) await readUpTo(segment.handle, buf, offset)
  const out = await layer.open(file, true)
  try {
    await out.truncate(0)
    await out.writev([buf], 0)
    await out.datasync()
  } finally {
    await out.close()
  }
  await layer.syncDir(dir)
  return file
}

/**
 * Only what is provably this store's torn segment moves: a file whose intact header names
 * another store (or other geometry) stays where it is, and the open is refused (IDENTITY).
 */
async function refuseForeign (layer: FileLayer, home: SegmentHome, volumes: string[], id: number, geometry: SegmentGeometry): Promise<void> {
  for (const volume of volumes) {
    const foreign = await foreignSegment(layer, path.join(home.dirOf(volume), segmentFileName(id)), id, geometry)
    if (foreign) throw new LogdiskError('IDENTITY', foreign)
  }
}

async function removeUnfinished (layer: FileLayer, home: SegmentHome, volumes: string[], id: number): Promise<void> {
  for (const volume of volumes) {
    await layer.remove(path.join(home.dirOf(volume), segmentFileName(id)))
    await layer.syncDir(home.dirOf(volume))
  }
}

async function moveAside (layer: FileLayer, storeDir: string, home: SegmentHome, volumes: string[], name: string, id: number, geometry: SegmentGeometry, opts: { readOnly?: boolean }): Promise<string> {
  await refuseForeign(layer, home, volumes, id, geometry)
  if (opts.readOnly) return `${name} (left in place: opened read-only)`
  const dir = path.join(storeDir, 'lost+found')
  await layer.mkdirp(dir)
  let to = ''
  for (const volume of volumes) {
    to = path.join(dir, `${name}.${volume}.${Date.now()}`)
    const from = path.join(home.dirOf(volume), name)
    try {
      await layer.rename(from, to)
    } catch (err) {
      // A pool volume on another filesystem than the store (the usual pool): rename(2) fails
      // with EXDEV. Failing here left the open half done (earlier segments already cut or
      // moved), and each retry moved more (a hostile test's D2).
      if ((err as { cause?: NodeJS.ErrnoException }).cause?.code !== 'EXDEV') throw err
      await copyAcross(layer, from, to)
      await layer.remove(from)
    }
    await layer.syncDir(home.dirOf(volume))
  }
  await layer.syncDir(dir)
  return to
}

/** Copies `from` to `to` (on another filesystem) whole and durably; `to` appears only once whole. */
async function copyAcross (layer: FileLayer, from: string, to: string): Promise<void> {
  const partial = `${to}.partial`
  const src = await layer.open(from, false)
  try {
    const out = await layer.open(partial, true)
    try {
      await out.truncate(0)
      const size = await src.size()
      const buf = Buffer.alloc(Math.min(4 * 1024 * 1024, Math.max(size, 1)))
      for (let at = 0; at < size;) {
        const n = await readUpTo(src, buf.subarray(0, Math.min(buf.length, size - at)), at)
        if (n === 0) break
        await out.writev([buf.subarray(0, n)], at)
        at += n
      }
      await out.datasync()
    } finally {
      await out.close()
    }
  } catch (err) {
    await layer.remove(partial).catch(() => undefined) // a full filesystem: room back
    throw err
  } finally {
    await src.close()
  }
  await layer.rename(partial, to)
}
