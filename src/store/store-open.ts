import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError, fromSystemError } from '../errors'
import type { ArchiveLink } from './archive-link'
import { BlockMap } from './block-map'
import { takeBlockMap, type TakenBlockMap } from './block-map-file'
import { CONFIG_FILE, newConfig, readConfig, writeConfig, type CreateOptions, type StoreConfig } from './config'
import { nodeFileLayer, type FileLayer } from './file-layer'
import { segmentFileName } from './format'
import { IndexDb, type SegmentRecord } from './index-db'
import { silentLogger, type Logger } from './logger'
import type { OpenOptions } from './open-options'
import { readOnlyLayer } from './read-only-layer'
import { WritebackGuard } from './writeback-guard'
import { HISTORY_HORIZON, recover, type Recovered } from './recovery'
import type { SegmentGeometry } from './segment'
import type { SnapshotTable } from './snapshots'
import { CACHE_VOLUME, LOCAL_VOLUME, POOL_FILE, localHome, type SegmentHome } from './segment-home'
import { makeDirs } from '../make-dirs'
import { isAlive } from '../process-alive'

export const INDEX_DIR = 'index'
export const HOLDER_FILE = 'holder.json'

/**
 * Making and opening a store directory: everything Store.create and Store.open do before the
 * parts of an open store exist. Opening replays the log into the index and the block map
 * (recovery.ts), then works out each segment's state and copies from the index's records and
 * what recovery found on the volumes.
 */

/** Makes an empty store in `dir` (new or empty). */
export async function createStoreDir (dir: string, opts: CreateOptions, layer: FileLayer = nodeFileLayer): Promise<StoreConfig> {
  const config = newConfig(opts)
  if (fs.existsSync(path.join(dir, CONFIG_FILE))) {
    throw new LogdiskError('STORE_EXISTS', `a store already exists at ${dir}`)
  }
  if (fs.existsSync(dir) && fs.readdirSync(dir).length > 0) {
    throw new LogdiskError('BAD_ARGUMENT', `${dir} is not empty; give a new or empty directory for the store`)
  }
  try {
    makeDirs(dir)
    fs.mkdirSync(path.join(dir, INDEX_DIR))
  } catch (err) {
    throw fromSystemError(err, `create ${dir}`)
  }
  await layer.mkdirp(localHome(dir).dirOf(LOCAL_VOLUME))
  writeConfig(dir, config) // last: a directory without store.json is not a store
  return config
}

/** A store directory opened and recovered: what the parts of the open store start from. */
export interface OpenedStore {
  config: StoreConfig
  layer: FileLayer
  /** Keeps the failed fdatasyncs of `layer`'s files. */
  writebacks: WritebackGuard
  logger: Logger
  index: IndexDb
  home: SegmentHome
  map: BlockMap
  recovered: Recovered & { snapshots: SnapshotTable }
  ids: number[]
  volumes: Map<number, string[]>
  states: Map<number, SegmentRecord['state']>
  archived: Set<number>
  /** Segments whose record says compaction freed entries it has not punched yet. */
  unpunched: Set<number>
  recycled: number
  lastTimeMs: number
  horizon: number
  /** Copies dropped while recovering, to record once the store exists. */
  drops: Array<[number, string]>
  /** Where later drops of the segments recovery opened go (the open store's segment table). */
  onDrop: (handler: (id: number, volume: string) => void) => void
}

/**
 * Opens the index and replays the log. On failure the index is closed again; on success the
 * caller owns it.
 */
export async function openStoreDir (dir: string, opts: OpenOptions): Promise<OpenedStore> {
  const config = readConfig(dir)
  const base = opts.readOnly ? readOnlyLayer(opts.fileLayer ?? nodeFileLayer, opts.readOnly.scratchDir) : opts.fileLayer ?? nodeFileLayer
  const writebacks = new WritebackGuard(base)
  const layer = writebacks.layer
  const log = opts.logger ?? silentLogger
  let index: IndexDb
  try {
    index = await (opts.openIndex ?? IndexDb.open)(opts.readOnly?.indexDir ?? path.join(dir, INDEX_DIR))
  } catch (err) {
    if (err instanceof LogdiskError && err.code === 'STORE_LOCKED') throw lockedError(dir, err)
    throw err
  }
  let savedMap: TakenBlockMap | undefined
  try {
    if (!opts.home && fs.existsSync(path.join(dir, POOL_FILE))) {
      throw new LogdiskError('BAD_ARGUMENT', `${dir} keeps its segments in a pool: open it through openStore (src/app/open.ts)`)
    }
    if (!opts.readOnly) removeDeadTemps(dir)
    const baseHome = opts.home ?? localHome(dir, opts.readOnly ? undefined : { layer, segmentBytes: config.segmentBytes })
    // Taken before anything is written: a write open deletes the saved map here (block-map-file.ts).
    savedMap = opts.savedBlockMap === false ? undefined : await takeBlockMap(layer, path.join(dir, INDEX_DIR), !!opts.readOnly)
    const map = new BlockMap()
    map.setVolumeBlocks(config.sizeBytes / config.blockBytes) // the dense layout, once it is no bigger (block-map.ts)
    const geometry: SegmentGeometry = { uuid: config.uuid, blockBytes: config.blockBytes, segmentBytes: config.segmentBytes }
    const cacheDir = opts.readOnly ? path.join(opts.readOnly.scratchDir, 'cache') : path.join(dir, 'cache')
    await removeFiles(layer, cacheDir) // fetched copies of a previous run
    // Rebuilding the index needs the whole history: every archived segment comes back for
    // the scan (its local copy may have been punched), and stays archived.
    const rebuilding = (await index.checkpoint()) === undefined
    const inArchive = rebuilding && opts.archive ? await fetchAllArchived(layer, cacheDir, opts.archive, log) : []
    const home = inArchive.length > 0 ? withCacheVolume(baseHome, cacheDir) : baseHome
    // Copies dropped while recovering are handled once the store exists.
    const drops: Array<[number, string]> = []
    let onDrop = (id: number, volume: string): void => { drops.push([id, volume]) }
    const recovered = await recover(layer, dir, home, geometry, index, map, log, id => volume => onDrop(id, volume), new Set(inArchive), { readOnly: !!opts.readOnly, savedMap, dropCopyWrites: opts.dropCopyWrites === true })
    if (inArchive.length > 0) await removeFiles(layer, cacheDir)
    // From here on this open may append: the log may go on past the last clean close.
    if (!opts.readOnly && recovered.cleanClose) await index.clearCleanClose()
    const records = await index.segments()
    const ids = [...new Set([...records.keys(), ...recovered.segments])]
      .filter(id => id <= recovered.current.id && records.get(id)?.state !== 'recycled')
      .sort((a, b) => a - b)
    // Where each segment's copies should be: the index's record (written when it was placed
    // or moved), else where they were found.
    const volumes = new Map<number, string[]>()
    const states = new Map<number, SegmentRecord['state']>()
    const archived = new Set([...records].filter(([, r]) => r.archived === true).map(([id]) => id))
    const unpunched = new Set([...records].filter(([, r]) => r.unpunched === true).map(([id]) => id))
    for (const id of ids) {
      const state = records.get(id)?.state ?? 'active'
      states.set(id, id === recovered.current.id ? 'current' : state === 'current' ? 'active' : state)
      const where = records.get(id)?.volumes ?? recovered.chosen.get(id)
      if (where) volumes.set(id, where)
      baseHome.occupied(id, (recovered.located.get(id) ?? where ?? []).filter(v => v !== CACHE_VOLUME))
    }
    // Files of segments the index says are gone (a crash between the record and the delete).
    for (const [id, record] of records) {
      if (record.state !== 'recycled' && record.state !== 'archived') continue
      for (const v of (recovered.located.get(id) ?? []).filter(v => v !== CACHE_VOLUME)) {
        if (opts.readOnly) continue // the next open that writes removes it
        log.warn({ segment: id, volume: v, state: record.state }, 'removing a leftover copy of a segment the index says is gone')
        await layer.remove(path.join(baseHome.dirOf(v), segmentFileName(id)))
      }
    }
    if (!opts.readOnly && !rebuilding && !recovered.report.rebuiltIndex) await removeUnnamedCopies(layer, baseHome, records, recovered, log)
    const recycled = [...records.values()].filter(r => r.state === 'recycled').length
    if (!opts.readOnly) writeHolder(dir, opts.holder)
    const lastTimeMs = (await index.entry(recovered.seq))?.timeMs ?? 0
    const horizon = await index.counter(HISTORY_HORIZON)
    return {
      config,
      layer,
      writebacks,
      logger: log,
      index,
      home: baseHome,
      map,
      recovered,
      ids,
      volumes,
      states,
      archived,
      unpunched,
      recycled,
      lastTimeMs,
      horizon,
      drops,
      onDrop: handler => { onDrop = handler }
    }
  } catch (err) {
    if (savedMap && 'saved' in savedMap) await savedMap.saved.deferred?.release() // not deferred into a map, or a map that is dropped
    await index.close()
    throw err
  }
}

/** Removes the holder file (the store is closed). */
/**
 * Removes the store directory's temporary files (writeFileAtomic's `<file>.tmp-<pid>-<r>`)
 * whose writer is dead: one killed before its rename (a resize's store.json, say) left its
 * temp for good (helper-86 D5). A live writer's (a command writing policy.json beside a
 * daemon) stays. Called under the store's lock.
 */
function removeDeadTemps (dir: string): void {
  let names: string[]
  try { names = fs.readdirSync(dir) } catch { return }
  for (const name of names) {
    const m = /\.tmp-(\d+)-[a-z0-9]+$/.exec(name)
    if (!m || Number(m[1]) === process.pid || isAlive(Number(m[1]))) continue
    try {
      if (fs.lstatSync(path.join(dir, name)).isFile()) fs.rmSync(path.join(dir, name), { force: true })
    } catch { /* gone meanwhile */ }
  }
}

export function removeHolder (dir: string): void {
  fs.rmSync(path.join(dir, HOLDER_FILE), { force: true })
}

/** A home that also lists <store>/cache (archived segments fetched for an index rebuild). */
function withCacheVolume (home: SegmentHome, cacheDir: string): SegmentHome {
  return {
    dirOf: v => v === CACHE_VOLUME ? cacheDir : home.dirOf(v),
    volumes: () => [...home.volumes(), CACHE_VOLUME],
    place: id => home.place(id),
    occupied: (id, vs) => home.occupied(id, vs.filter(v => v !== CACHE_VOLUME)),
    vacated: (id, vs) => home.vacated(id, vs.filter(v => v !== CACHE_VOLUME)),
    stillSuits: vs => home.stillSuits(vs)
  }
}

/** Fetches every archived segment into `cacheDir` for an index rebuild; returns their ids. */
async function fetchAllArchived (layer: FileLayer, cacheDir: string, link: ArchiveLink, log: Logger): Promise<number[]> {
  const ids = await link.list()
  await layer.mkdirp(cacheDir)
  for (const id of ids) {
    const h = await layer.open(path.join(cacheDir, segmentFileName(id)), true)
    try {
      await h.truncate(0)
      await h.writev([await link.get(id)], 0)
    } finally {
      await h.close()
    }
  }
  if (ids.length > 0) log.warn({ segments: ids.length, from: link.describe() }, 'rebuilding the index: fetched archived segments back to scan them')
  return ids
}

/** Deletes the files of a flat directory (the fetch cache), through the store's file layer. */
async function removeFiles (layer: FileLayer, dir: string): Promise<void> {
  const names = await layer.list(dir).catch(() => [] as string[])
  for (const name of names) await layer.remove(path.join(dir, name))
}

function writeHolder (dir: string, holder = 'logdisk'): void {
  try {
    fs.writeFileSync(path.join(dir, HOLDER_FILE), JSON.stringify({ pid: process.pid, holder }) + '\n')
  } catch { /* informational only */ }
}

/**
 * STORE_LOCKED, saying who holds the store when it can tell (holder.json, while its process
 * runs) and what to do: a mount is unmounted or used through its daemon; a command is waited
 * for. "unmount it first" was said of a compaction and to a `mount` refused by an offline
 * verify (a hostile test, helper-58).
 */
export function lockedError (dir: string, cause: LogdiskError): LogdiskError {
  let h: { pid?: unknown, holder?: unknown } | undefined
  try { h = JSON.parse(fs.readFileSync(path.join(dir, HOLDER_FILE), 'utf8')) } catch { /* no holder file */ }
  const known = h !== undefined && Number.isSafeInteger(h.pid) && typeof h.holder === 'string' && isAlive(h.pid as number)
  const text = !known
    ? 'is in use by another process (mounted, or a command is running on it); wait for it, or unmount it first'
    : (h!.holder as string).startsWith('logdisk mount ')
        ? `is in use by pid ${String(h!.pid)} (${String(h!.holder)}); unmount it first, or run the command while it is mounted`
        : `is in use by pid ${String(h!.pid)} (${String(h!.holder)}); wait for it to finish, then try again (or stop it with kill ${String(h!.pid)}: a command stopped part way loses no data)`
  return new LogdiskError('STORE_LOCKED', `store ${dir} ${text}`, cause)
}

/**
 * Removes copies the index does not name of the segments it keeps: a mirror copy dropped after
 * a failed write, a copy a crash left behind a move or a repair (both record where copies are
 * before old ones go, and new ones only once written). Stale by the index's word, so removed
 * at open rather than at the next `pool repair`: a full rebuild (the index lost) cannot tell
 * them from current copies, and one made the good copy match a dropped one's stale bytes
 * (simulation seed 17100006). Only after an open that read the index (a rebuild's records are
 * its own choice); never a copy recovery read, nor any while no recorded copy is found. A
 * running store removes a copy it dropped itself once the drop is on record (segment-table.ts
 * removeStaleCopies): what is left here is what a crash or a failed removal left.
 */
async function removeUnnamedCopies (layer: FileLayer, home: SegmentHome, records: Map<number, SegmentRecord>, recovered: Recovered, log: Logger): Promise<void> {
  const dirs = new Set<string>()
  for (const [id, record] of records) {
    if (record.state === 'recycled' || record.state === 'archived') continue
    const recorded = record.volumes ?? []
    const found = recovered.located.get(id) ?? []
    // None of the recorded copies here (a pool volume missing): what there is stays, for
    // `verify` and `pool repair` to judge.
    if (!recorded.some(v => found.includes(v))) continue
    for (const v of found) {
      if (v === CACHE_VOLUME || recorded.includes(v) || recovered.chosen.get(id)?.includes(v)) continue
      // A volume that refuses (a failing disk, a read-only filesystem) keeps it: the index does
      // not name it, so this open and every later one that reads the index never use it; the
      // store opens anyway. Said once, at info level: nothing is wrong with the store (a
      // command that succeeded printed it as an error; a hostile test, helper-57).
      try {
        await layer.remove(path.join(home.dirOf(v), segmentFileName(id)))
      } catch (err) {
        log.info({ segment: id, volume: v, err: (err as Error).message }, 'a stale copy of a segment that the index does not name could not be removed; it stays unused (logdisk pool repair, or the next open, removes it)')
        continue
      }
      log.warn({ segment: id, volume: v, recorded }, 'removed a stale copy of a segment that the index does not name')
      home.vacated(id, [v])
      dirs.add(home.dirOf(v))
    }
  }
  // Gone for good before the store is used; a directory that cannot be synced may bring a
  // name back after a power loss, which the next open removes again.
  for (const d of dirs) await layer.syncDir(d).catch(err => log.error({ dir: d, err: (err as Error).message }, 'could not fsync a directory after removing stale segment copies'))
}
