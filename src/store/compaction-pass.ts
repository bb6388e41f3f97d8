import path from 'node:path'
import { LogdiskError, isLogdiskError } from '../errors'
import { keepsHistory } from './archive-link'
import { analyzeVersions, anyLiveIn, deadVersionBatches, firstLiveAtOrAfter, liveDetails, liveTrimRuns, type CompactionReport, type Judgement, type VersionAnalysis } from './compaction'
import { encodeFree, entryBytes, holdsVersions, tableBytes } from './entry'
import { ENTRY_HEADER_BYTES, EntryKind, HELD_BY_OWN_TRIM, MAX_ENTRY_BLOCKS, MAX_TRIM_BLOCKS, MAX_TRIM_MOVE_RUNS, TRIM_MOVE_RECORD_BYTES, segmentFileName } from './format'
import type { EntryRecord, HistoryRows } from './index-db'
import { punchHoles } from './file-layer'
import { MarkerLife } from './marker-life'
import { holdsOnlyFreeEntries } from './scanner'
import { clearPendingHeaders, writePendingHeaders } from './pending-headers'
import { redoPendingHeaders } from './recovery'
import type { StoreParts } from './parts'
import type { RecordList } from './record-list'

/**
 * Dead versions one compaction holds at once (16 bytes each: 4 MiB). More are found again by a
 * second walk and leave the index a batch at a time. A pass after 15 s of sequential writes at
 * ~1 GB/s found 3.4 million: holding them all took the daemon from 133 to 216 MiB (issue 11's
 * memory goal).
 */
export const COMPACTION_DEAD_BATCH = 262144

export interface CompactOptions {
  /** Only this snapshot's partition, without cleaning. */
  snapshot?: string
  /** Sealed segments with live bytes under this fraction of a segment are cleaned first. */
  cleanBelow?: number
}

/**
 * Compaction (001 Fig. 6; 004 cl. 9-15; F5), run under the maintenance lock. Frees every
 * version no one needs (superseded and pinned by no snapshot or protected point) without
 * copying live data in place: runs of entries that no needed version references become one
 * `free` entry whose data is punched out of the file (the segment keeps its size and
 * offsets), and a segment left with nothing is recycled. Mostly-dead sealed segments are
 * cleaned first: their few live versions move to the head of the log in `move` entries that
 * keep each version's sequence number. The analysis of which versions live is compaction.ts.
 */
export async function compactionPass (p: StoreParts, opts: CompactOptions, onProgress?: (done: number, total: number) => void): Promise<CompactionReport> {
  p.state.assertOpen()
  const { lifeCycle, history, segments, db, index } = p
  const started = Date.now()
  // Header writes an earlier pass left on record (it failed on a read-only pool volume) go
  // first: the record has one slot, and this pass's own would take it.
  const waiting = await redoPendingHeaders(p.layer, p.dir, p.home, db, p.logger, id => { if (segments.hasLocal(id)) segments.recordUnpunched(id, true) })
  if (waiting !== undefined) {
    throw new LogdiskError('READ_ONLY', `compaction waits: free headers an earlier pass could not write are pending on a pool volume that is read-only (${waiting}); make it writable again`)
  }
  const report: CompactionReport = { versionsFreed: 0, freeBatches: 0, versionsMoved: 0, trimsMoved: 0, segmentsCleaned: 0, entriesFreed: 0, runsPunched: 0, bytesPunched: 0, segmentsRecycled: 0, segmentsInactive: 0, durationMs: 0 }
  const S = p.config.segmentBytes
  const B = p.config.blockBytes
  let fence = await lifeCycle.takeFence()
  let range = { from: 1, to: fence.seq }
  if (opts.snapshot !== undefined) {
    const snap = p.snapshotTable.require(opts.snapshot)
    range = { from: (p.snapshotTable.previous(snap.seq)?.seq ?? 0) + 1, to: snap.seq }
  }
  // Cuts at or before the fence: a snapshot taken later cannot fall inside the life of a
  // version whose successor is at or before the fence.
  const judgement = async (within: { from: number, to: number }): Promise<Judgement> => ({ cuts: p.snapshotTable.list().map(s => s.seq), range: within, fenceSeq: fence.seq, windowStart: await history.windowStart(fence) })
  let judged = await judgement(range)
  // With backing storage no version leaves the index: none is kept, only counted.
  const keepDead = keepsHistory(p.opts.archive) ? 0 : p.opts.compactionDeadBatch ?? COMPACTION_DEAD_BATCH
  // Every version in (block, seq) order, as each walk reads it.
  const versions = (): AsyncGenerator<HistoryRows> => db.historyBatches(0, undefined, p.opts.historyHoldVersions)
  let analysis = await analyzeVersions(versions(), judged, keepDead)
  p.opts.reclaimMemory?.()

  // 1. Clean mostly-dead sealed segments: move their live versions to the head.
  const cleanBelow = opts.snapshot === undefined ? (opts.cleanBelow ?? 0.5) : 0
  const liveIn = (id: number): number => firstLiveAtOrAfter(analysis.live, (id + 1) * S) - firstLiveAtOrAfter(analysis.live, id * S)
  let trims = await trimHolding(p, analysis)
  // What moving a segment's needed versions takes, data and trims (a run of trims is one record).
  const cleaningBytes = (id: number): number => liveIn(id) * B + (trims.runsIn.get(id) ?? 0) * TRIM_MOVE_RECORD_BYTES
  const toClean = cleanBelow > 0 ? segments.ids.filter(id => fence.mayTouchSegment(id) && liveIn(id) > 0 && cleaningBytes(id) < cleanBelow * S) : []
  if (toClean.length > 0) {
    // What moving takes (block, seq, CRC) only for the versions that move: the same
    // judgement again, kept for the chosen segments alone.
    const chosen = new Set(toClean)
    const moving = await liveDetails(versions(), judged, position => chosen.has(Math.floor(position / S)))
    p.opts.reclaimMemory?.()
    try {
      for (const id of toClean) {
        const lo = firstLiveAtOrAfter(moving, id * S)
        const hi = firstLiveAtOrAfter(moving, (id + 1) * S)
        for (let i = lo; i < hi; i += MAX_ENTRY_BLOCKS) {
          const group = []
          for (let j = i; j < Math.min(hi, i + MAX_ENTRY_BLOCKS); j++) {
            group.push({ block: moving.blocks[j], seq: moving.seqs[j], crc: moving.crcs[j], position: moving.positions[j] })
          }
          await moveVersions(p, group)
          report.versionsMoved += group.length
        }
        report.segmentsCleaned++
      }
    } catch (err) {
      // A full pool leaves no room to move into; freeing in place needs none, so go on.
      if (!isLogdiskError(err, 'NO_SPACE')) throw err
      p.logger.warn({ err: (err as Error).message }, 'compaction: no room to move live versions; freeing in place only')
    }
  }
  // Needed trims move out of the segments cleaned above and out of segments they alone keep
  // (store format 5): a trim that stays its block's newest version is needed for good, and its
  // entry would keep its segment for good (scattered discards filled a bounded pool). Moving
  // them reads nothing: the index lists them. Only local segments: an archived one takes no
  // room in the pool and is never freed here. Chosen by the same judgement as the data moves
  // (those change no trim and no liveness), so one judgement after both serves them both.
  const trimsOut = cleanBelow > 0 ? segments.ids.filter(id => fence.mayTouchSegment(id) && segments.hasLocal(id) && segments.stateOf(id) !== 'archived' && trims.runsIn.has(id) && cleaningBytes(id) < cleanBelow * S) : []
  if (trimsOut.length > 0) {
    const chosen = new Set(trimsOut)
    const runs = await liveTrimRuns(versions(), judged, trims.holderOf, id => chosen.has(id))
    try {
      // An entry lists at most MAX_TRIM_MOVE_RUNS runs and MAX_TRIM_BLOCKS blocks (one index
      // row each, as a trim entry of that many blocks makes).
      for (let i = 0; i < runs.length;) {
        let blocks = runs[i].count
        let n = 1
        while (i + n < runs.length && n < MAX_TRIM_MOVE_RUNS && blocks + runs[i + n].count <= MAX_TRIM_BLOCKS) blocks += runs[i + n++].count
        await p.log.appendTrimMove(runs.slice(i, i + n))
        report.trimsMoved += blocks
        i += n
      }
    } catch (err) {
      if (!isLogdiskError(err, 'NO_SPACE')) throw err
      p.logger.warn({ err: (err as Error).message }, 'compaction: no room to move trims; freeing in place only')
    }
  }
  if (report.versionsMoved > 0 || report.trimsMoved > 0) {
    // The moved copies are the live ones now: judge again from a fence past the moves.
    fence = await lifeCycle.takeFence()
    judged = await judgement(opts.snapshot === undefined ? { from: 1, to: fence.seq } : range)
    analysis = await analyzeVersions(versions(), judged, keepDead)
    trims = await trimHolding(p, analysis)
    p.opts.reclaimMemory?.()
  }
  // Without backing storage, freeing dead versions gives up the points that read them:
  // the log says so before anything is freed. With it, history stays whole (archived first).
  // The marker goes into the maintenance reserve that writes leave free at the end of every
  // segment (pass-fence.ts), so a full pool does not refuse it. Should even the reserve be
  // used up (many compactions in a full pool, none of which emptied a whole segment), the
  // pass still frees what needs no new marker: versions dead at points the horizon already
  // gave up (judged with the window starting just past it), and never fails for room.
  if (!keepsHistory(p.opts.archive)) {
    try {
      await history.raiseHorizon(analysis.horizon)
    } catch (err) {
      if (!isLogdiskError(err, 'NO_SPACE')) throw err
      p.logger.warn({ err: (err as Error).message }, 'compaction: no room for the history marker; freeing only what the current horizon allows')
      judged = { ...judged, windowStart: Math.min(judged.windowStart, history.horizon + 1) }
      analysis = await analyzeVersions(versions(), judged, keepDead)
      trims = await trimHolding(p, analysis)
      if (analysis.horizon > history.horizon) throw new LogdiskError('IO', `internal: compaction judged versions dead past the history horizon ${history.horizon}`)
    }
  }

  // 2. Free what nothing references; punch it out; recycle empty segments.
  const markers = new MarkerLife(p, fence)
  const freeable = (x: { seq: number, e: EntryRecord }): boolean => {
    if (x.e.freed === true) return true
    // A trim or trim move entry goes once its segment holds no needed trim (the rows name the
    // holder's segment, not the entry: a segment's trim entries go together).
    if (x.e.kind === EntryKind.trim || x.e.kind === EntryKind.trimMove) return !trims.runsIn.has(Math.floor(x.e.position / S))
    if (x.e.kind !== EntryKind.write && x.e.kind !== EntryKind.move) return markers.has(x.seq)
    if (x.e.kind === EntryKind.write && (x.seq < range.from || x.seq > range.to)) return false
    const dataStart = x.e.position + tableBytes({ kind: x.e.kind as EntryKind, count: x.e.count })
    return !anyLiveIn(analysis.live, dataStart, dataStart + x.e.count * B)
  }
  const recycle: number[] = []
  /** Versions whose entries this pass freed: what it reports freed while backing storage keeps them all in the index. */
  let versionsInFreedEntries = 0
  // Per segment: the copies that took its free headers and the runs to punch, as numbers
  // (a run of a random-write log is one 4 KiB entry: an object and a path string each held
  // ~8 MiB per 15,000 runs until the punching, measured).
  const punches: Array<{ id: number, files: string[], runs: number[] }> = []
  const mayFree = (id: number): boolean => segments.hasLocal(id) && segments.stateOf(id) !== 'archived'
  const total = segments.ids.filter(id => fence.mayTouchSegment(id) && mayFree(id)).length
  let done = 0
  // One segment's entries at a time, as the index lists them (sequence order is log order,
  // so segment by segment): the entries of the whole log are never held at once (a random
  // 4 KiB write is one entry, so after a random-write run that was 100,000s of objects).
  const freeSegment = async (id: number, entries: Array<{ seq: number, e: EntryRecord }>): Promise<void> => {
    p.state.assertNotClosing()
    onProgress?.(done++, Math.max(total, done))
    const runs: Array<{ first: number, last: number, fresh: boolean }> = []
    for (let i = 0; i < entries.length; i++) {
      if (!freeable(entries[i])) continue
      const run = runs[runs.length - 1]
      if (run && run.last === i - 1) { run.last = i; run.fresh ||= !entries[i].e.freed } else runs.push({ first: i, last: i, fresh: !entries[i].e.freed })
    }
    // A segment an earlier pass freed entries of and stopped before punching them (recorded
    // `unpunched`): every run goes through again (free headers written anew, then punched).
    const redo = segments.isUnpunched(id)
    const fresh = runs.filter(r => r.fresh || redo)
    if (fresh.length === 0) segments.recordUnpunched(id, false)
    if (fresh.length > 0) {
      // With backing storage, history stays complete: the whole segment is archived
      // before any of it is punched, and reads of dead versions fetch it back.
      if (keepsHistory(p.opts.archive)) await lifeCycle.ensureArchived(id)
      // Every copy the index names takes the free headers, or stops being named first, on
      // record: a named copy that could not be opened (the handle reads from the others) would
      // keep the freed entries, and a later recovery that makes copies match the first one could
      // take it, bringing back a freed snapshot marker whose deletion marker is gone (the
      // snapshot returns without its versions: simulation seed 6, saved block map). A handle
      // opened before the record changed is opened again: one on the copy fetched from backing
      // storage before a bring-back made the segment local took the headers in its place, and
      // dropping the local copy for it left the segment with none (simulation seed 148).
      let segment = await p.reader.segment(id)
      const named = segments.volumesOf(id) ?? []
      if (segment.volumes.length !== named.length || !named.every(v => segment.volumes.includes(v))) {
        p.reader.forgetHandle(id)
        segment = await p.reader.segment(id)
      }
      for (const v of named) if (!segment.volumes.includes(v)) segments.copyDropped(id, v)
      await segments.recordDrops()
      const headers: Array<[number, Buffer]> = []
      const runs: number[] = [] // from, to, ...
      // Entries freed, staged in the batch only once their free headers are durable.
      const freedEntries: Array<[number, EntryRecord]> = []
      for (const run of fresh) {
        const first = entries[run.first]
        const last = entries[run.last]
        const start = first.e.position % S
        const end = last.e.position % S + entryLength(last, B)
        headers.push([start, encodeFree(first.seq, last.seq, last.e.timeMs, end - start, p.log.entryDurableSeq())])
        const from = Math.ceil((start + ENTRY_HEADER_BYTES) / 4096) * 4096
        const to = Math.floor(end / 4096) * 4096
        if (to > from) runs.push(from, to)
        for (let i = run.first; i <= run.last; i++) {
          const x = entries[i]
          if (x.e.freed) continue
          x.e.freed = true // read from the index for this pass alone: no copy needed
          freedEntries.push([x.seq, x.e])
          // A freed write or move entry held only dead versions (freeable).
          if (x.e.kind === EntryKind.write || x.e.kind === EntryKind.move) versionsInFreedEntries += x.e.count
        }
      }
      // A header written over another can be torn by a crash: the index and a file beside it
      // hold the writes first, and opening the store redoes them whole (recovery.ts), a full
      // rebuild without the index too (pending-headers.ts).
      const pending = { segment: id, volumes: segment.volumes, headers }
      await writePendingHeaders(p.layer, p.dir, pending)
      await db.putPending(pending)
      for (const [at, header] of headers) await segment.handle.writev([header], at)
      await segment.handle.datasync() // the free headers are durable before any data goes
      // A mirror copy whose fdatasync failed there was dropped: on record before the pending
      // headers go, or a kill -9 between the two would leave it named, and the next open would
      // neither write its headers again nor see (through the page cache) that its disk lost them.
      await segments.recordDrops()
      // The flags and the record that the bytes still wait for their punch go in one batch,
      // before the pending record goes: a kill -9 after the clearing and before this pass's
      // commit left free entries on disk that the index did not know, a later pass began a
      // run inside one and punched it (free-headers-kill-before-flags.test.ts). They are staged
      // in the pass's batch too, and a pass that stops before punching leaves the record for
      // the next one.
      segments.recordUnpunched(id, runs.length > 0)
      await db.putFreed(freedEntries, new Map([[id, segments.recordOf(id)]]))
      await db.clearPending()
      await clearPendingHeaders(p.layer, p.dir)
      // Exactly the copies that took the free headers, wherever the segment lives later.
      if (runs.length > 0) punches.push({ id, files: segment.volumes.map(v => path.join(p.home.dirOf(v), segmentFileName(id))), runs })
      for (const [seq, e] of freedEntries) {
        index.batch.entries.set(seq, e)
        report.entriesFreed++
      }
    }
    if (entries.every(freeable)) recycle.push(id)
  }
  let id = -1
  let entries: Array<{ seq: number, e: EntryRecord }> = []
  /** Segments the index summarizes an entry of. */
  const summarized = new Set<number>()
  for await (const batch of db.entryBatches(1, fence.seq)) {
    for (const [seq, e] of batch) {
      const at = Math.floor(e.position / S)
      summarized.add(at)
      if (!fence.mayTouchEntry(seq, e.position) || !mayFree(at)) continue
      if (at !== id) {
        if (at < id) throw new LogdiskError('IO', `internal: entry ${seq} lies in segment ${at}, before segment ${id} of an earlier entry`)
        if (entries.length > 0) await freeSegment(id, entries)
        id = at
        entries = []
      }
      await markers.consider(seq, e)
      entries.push({ seq, e })
    }
  }
  if (entries.length > 0) await freeSegment(id, entries)
  // A sealed segment the index summarizes no entry of: an index rebuild summarizes none of
  // the entries free entries cover, so one that a pass emptied and stopped before recycling
  // (a crash between its free headers and its index commit, the index then lost) was never
  // seen again and stayed for good. Its bytes decide: free entries alone, it goes too.
  for (const bare of segments.ids) {
    if (summarized.has(bare) || !fence.mayTouchSegment(bare) || !mayFree(bare)) continue
    p.state.assertNotClosing()
    onProgress?.(done++, Math.max(total, done))
    if (await onlyFree(p, bare)) recycle.push(bare)
  }
  recycle.sort((a, b) => a - b)
  report.segmentsInactive = lifeCycle.markInactive(fence)
  // Dead versions leave the index (their bytes may stay until their whole entry is free),
  // unless backing storage keeps them: then every point in time stays restorable, every pass
  // judges the same archived versions dead again, and what it freed is what it punched
  // (helper-55: each `compact` reported the same count).
  report.versionsFreed = keepsHistory(p.opts.archive) ? versionsInFreedEntries : analysis.deadCount
  if (!keepsHistory(p.opts.archive)) report.freeBatches = await stageDeadVersions(p, analysis, judged, keepDead)
  await index.commitDurably() // the index forgets freed versions before any byte goes
  // Reads that looked a freed version up before the commit may still be reading it.
  await p.reads.drain()
  // One call punches every run of a segment copy (file-layer.ts punchHoles).
  for (const { id, files, runs } of punches) {
    const ranges: Array<[number, number]> = []
    for (let i = 0; i < runs.length; i += 2) ranges.push([runs[i], runs[i + 1] - runs[i]])
    for (const file of files) await punchHoles(p.layer, file, ranges)
    report.runsPunched += ranges.length
    for (const [, length] of ranges) report.bytesPunched += length
    segments.recordUnpunched(id, false) // committed below, with the recycled segments
  }
  // The index says an emptied segment is gone (recycled, or only on backing storage) before
  // any copy goes, as the archive pass does: removed first, a power loss before the record
  // left the index naming copies that were gone (simulation seed 16500192). The next open
  // removes the copies of a segment recorded gone (store-open.ts).
  const emptied: Array<[number, string[]]> = []
  // Only backing storage that keeps history keeps an emptied segment on record: a lazy
  // store's replica (a read-only link) held its versions for reads this store no longer
  // makes, and it was counted `archived` at 0 B for good (helper-51's leftover).
  const keptArchived = (id: number): boolean => segments.isArchived(id) && keepsHistory(p.opts.archive)
  for (const id of recycle) {
    emptied.push([id, segments.volumesOf(id) ?? []])
    segments.forgetVolumes(id)
    if (keptArchived(id)) {
      segments.setState(id, 'archived') // its history is on backing storage
    } else {
      segments.ids = segments.ids.filter(s => s !== id)
      segments.setState(id, 'recycled')
      segments.recycledCount++
    }
    segments.record(id)
    if (!keptArchived(id)) segments.forgetState(id)
    report.segmentsRecycled++
  }
  await index.commitDurably()
  for (const [id, volumes] of emptied) {
    p.reader.forgetHandle(id)
    await lifeCycle.removeEveryCopy(id)
    p.home.vacated(id, volumes)
  }
  onProgress?.(done, Math.max(total, done))
  p.opts.reclaimMemory?.()
  report.durationMs = Date.now() - started
  p.logger.info(report, 'compacted')
  return report
}

/**
 * Stages the removal of the analysis's dead versions from the index; returns the commits made
 * for them on the way (0: all wait for the pass's own). When there were more than
 * it kept, a second walk with the same judgement finds them again and each batch is committed
 * before the walk goes on (not durably: the pass's commitDurably, before anything is punched,
 * syncs them all). The walk reads one LevelDB snapshot (the iterator's), so the commits it
 * makes do not change what it sees; nothing else removes versions at or before the fence while
 * the pass holds the maintenance lock, and what writes add lies past the fence. A crash between
 * batches leaves versions that are dead in the index: the next pass frees them.
 */
async function stageDeadVersions (p: StoreParts, analysis: { dead: RecordList | undefined, deadCount: number }, judged: Judgement, batch: number): Promise<number> {
  if (analysis.dead !== undefined) {
    p.index.batch.historyDeletes.takeAll(analysis.dead)
    return 0
  }
  let commits = 0
  let staged = 0
  // Index reads of at most `batch` records (a record holds up to 64 versions of one entry).
  const found = await deadVersionBatches(p.db.historyBatches(0, Math.min(4096, Math.max(1, batch)), p.opts.historyHoldVersions), judged, batch, async dead => {
    p.state.assertNotClosing()
    // More than the first walk found is caught before the excess leaves the index (fewer only
    // shows at the end, after the commits: then the pass fails before it punches anything).
    staged += dead.length
    if (staged > analysis.deadCount) throw new LogdiskError('IO', `internal: compaction's second walk found more than the ${analysis.deadCount} dead versions of its first`)
    p.index.batch.historyDeletes.takeAll(dead)
    await p.index.commitStaged()
    commits++
    p.opts.reclaimMemory?.()
  })
  if (found !== analysis.deadCount) throw new LogdiskError('IO', `internal: compaction found ${found} dead versions on its second walk, ${analysis.deadCount} on its first`)
  return commits
}

/**
 * Whether segment `id` holds free entries alone (scanner.ts holdsOnlyFreeEntries). One that
 * cannot be read (damage a recovery reported, a failing disk) is not: it stays as it is.
 */
async function onlyFree (p: StoreParts, id: number): Promise<boolean> {
  try {
    const segment = await p.reader.segment(id)
    return await holdsOnlyFreeEntries(segment.handle, p.config.blockBytes)
  } catch (err) {
    p.logger.warn({ segment: id, err: (err as Error).message }, 'compaction: a segment with no indexed entry could not be read; left as it is')
    return false
  }
}

/**
 * Bytes of the entry at `x` in the log: a write, move or trim says it in its index record by
 * its count, a marker in its record's `bytes` (marker-life.ts puts it there before the marker
 * may be freed; never from its header then, which a free header or a punch may have replaced).
 */
function entryLength (x: { seq: number, e: EntryRecord }, B: number): number {
  const kind = x.e.kind as EntryKind
  if (holdsVersions(kind)) {
    return entryBytes({ kind, count: x.e.count, payloadBytes: kind === EntryKind.write || kind === EntryKind.move ? x.e.count * B : 0 })
  }
  if (x.e.bytes === undefined) throw new LogdiskError('IO', `internal: marker entry ${x.seq} is freed without its length on record`)
  return x.e.bytes
}

/**
 * Where needed trims are held (analysis.trimHolders), with an older release's rows, which
 * name no holder (their own trim entry holds them), looked up by seq; `holderOf` gives the
 * segment of one version's holder from its row.
 */
async function trimHolding (p: StoreParts, analysis: VersionAnalysis): Promise<{ runsIn: Map<number, number>, holderOf: (seq: number, crc: number) => number | undefined }> {
  const runsIn = new Map(analysis.trimHolders)
  const legacy = new Map<number, number>()
  for (const seq of analysis.legacyTrims) {
    const e = await p.db.entry(seq)
    if (e === undefined) continue // not summarized: its segment is judged by its bytes (onlyFree)
    const id = Math.floor(e.position / p.config.segmentBytes)
    legacy.set(seq, id)
    runsIn.set(id, (runsIn.get(id) ?? 0) + 1)
  }
  return { runsIn, holderOf: (seq, crc) => crc === HELD_BY_OWN_TRIM ? legacy.get(seq) : crc - 1 }
}

/**
 * Moves these live versions to the head of the log (read from where they are now,
 * CRC-checked): the cleaning step. Each keeps its block and original sequence number.
 */
async function moveVersions (p: StoreParts, versions: Array<{ block: number, seq: number, crc: number, position: number }>): Promise<void> {
  const B = p.config.blockBytes
  const data = Buffer.allocUnsafe(versions.length * B)
  for (let i = 0; i < versions.length; i++) {
    const v = versions[i]
    const got = await p.reader.readRun(v.block, 1, v.position, Uint32Array.of(v.crc))
    got.copy(data, i * B)
  }
  await p.log.appendMove(versions, data)
}
