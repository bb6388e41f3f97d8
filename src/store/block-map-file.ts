import os from 'node:os'
import path from 'node:path'
import { BlockMap, DENSE_ROW_BYTES, HASH_SLOT_BYTES, type BlockMapTables } from './block-map'
import { crc32c } from './crc'
import { publishFile, publishTempOf, readUpTo, type FileHandle, type FileLayer } from './file-layer'
import type { Checkpoint } from './index-db'

/**
 * The block map saved at a clean close, so that the next open loads it in one read instead of
 * scanning every history record of the index (issue 11; about 10 s for an 8 GiB disk).
 *
 * It is a file in the index directory, not LevelDB values: 28 bytes a slot, tens of MiB for a
 * large disk, read in one go, and written once per close. As LevelDB values it would be
 * written through LevelDB's log and compacted again and again, and dropping it could not be
 * made durable on its own. In the index directory it goes wherever the index goes: deleting
 * the index (to rebuild it) deletes the file too, and LevelDB leaves files it does not name
 * alone.
 *
 * The file only ever describes the index as a clean close left it. It is stamped with that
 * close's checkpoint (sequence number, log position and time) and the store's uuid, and a
 * write open takes it: reads it, then deletes it and syncs the directory before recovery
 * writes anything. So a file can never outlive a change of the index made by this release.
 * Any other writer changes the stamp: every open that can write (this release or an older one,
 * which does not know the file) commits a new checkpoint time at the end of recovery, a
 * rebuilt index has a new checkpoint, and adopt changes the uuid (and drops the file too).
 * A read-only open keeps the file: it reads the index through a private view
 * (index-view.ts) and cannot change the store's index.
 *
 * Layout (little-endian, docs/FORMAT.md), version 2:
 *
 *   magic 'LDBLKMAP' | u32 version | u32 stamp bytes | stamp JSON | u32 CRC32C of the bytes
 *   before it, zero-padded to 8 bytes | keys f64[slots] | positions f64[slots] | seqs f64[slots]
 *   | crcs u32[slots] | u32 CRC32C of every byte before it
 *
 * Version 2 adds the header's own CRC and the counts `blocks` and `trimmed` to the stamp, so
 * that a read-only open can check the header alone and defer the table (BlockMap.defer) until
 * a command needs its rows: diff and status never do, an incremental send rarely (the file
 * stays open meanwhile, so what is read later is the file checked now). The table's CRC is
 * checked whenever it is read. Version 1 (no header CRC, no counts) is still read, whole.
 *
 * Version 3 is version 2's header over a map in the dense layout (block-map.ts: row = block
 * number, for a volume small enough that this is no bigger than the hash table): `slots` is
 * the number of rows (the volume's blocks when saved), and the table has no keys:
 *
 *   ... header as version 2 ... | positions f64[rows] (position + 1; 0: not mapped) |
 *   seqs f64[rows] | crcs u32[rows] | u32 CRC32C of every byte before it
 *
 * A map in the hash layout is still written as version 2, so a release that reads only
 * versions 1 and 2 reads those; it finds a version 3 file unusable and reads the index.
 *
 * Written as a temporary file, fsynced, renamed, directory fsynced (litestream's atomic
 * publish): a crash at any step leaves either no file, the temporary one (ignored and removed
 * by the next write open), or the whole file.
 *
 * Deltas (issue 12 item 6: a receive of 4 MiB should not rewrite a map of tens of MiB). A
 * write open that loads the map does not delete the file but renames it `blockmap.base`, so
 * no `blockmap` exists while the store may change, exactly as before; the map then records
 * which blocks change (BlockMap.trackChanges). A clean close that changed few blocks (at most
 * an eighth of the slots, counting those of an earlier delta on the same base) writes only
 * their rows to `blockmap.delta`, stamped with the close's checkpoint and naming its base
 * (stamp and CRC32C), then renames the base back to `blockmap`. An open uses the delta only
 * with the very base it names, and the map they make only if the delta's stamp matches the
 * index, as for a whole file; otherwise the base alone is stale (its stamp is older than the
 * index's checkpoint) and the map is read from the index. A crash before the base is renamed
 * back leaves no `blockmap`: the next write open removes the base and any delta. A release
 * that does not know deltas reads the base, finds it stale, and rewrites `blockmap` at its
 * close; the leftover delta then names a base that is gone and is never used.
 *
 *   magic 'LDBMDELT' | u32 version | u32 stamp bytes | stamp JSON (with `base` and `rows`),
 *   zero-padded to 8 bytes | keys f64[rows] | positions f64[rows] | seqs f64[rows]
 *   (-1: the block is no longer mapped) | crcs u32[rows] | u32 CRC32C of every byte before it
 */

/** A saved map is read and checked this many bytes at a time. */
const READ_PIECE_BYTES = 256 * 1024

export const BLOCK_MAP_FILE = 'blockmap'
const TEMP_FILE = publishTempOf(BLOCK_MAP_FILE)
const MAGIC = Buffer.from('LDBLKMAP')
export const BLOCK_MAP_FILE_VERSION = 2
/** The dense layout's version (a map in the hash layout is still written as version 2). */
export const BLOCK_MAP_FILE_VERSION_DENSE = 3
/** The first version, still read (whole at open: its header has no CRC of its own). */
const BLOCK_MAP_FILE_VERSION_1 = 1
const HEADER_BYTES = 16
const SLOT_BYTES = HASH_SLOT_BYTES
/** Bytes of one slot of the table in memory (and in the file); a dense row: DENSE_ROW_BYTES. */
export const BLOCK_MAP_SLOT_BYTES = SLOT_BYTES
/** The changes since a saved map, and where that map waits while the store is open for writing. */
export const BLOCK_MAP_DELTA_FILE = 'blockmap.delta'
const DELTA_TEMP_FILE = publishTempOf(BLOCK_MAP_DELTA_FILE)
export const BLOCK_MAP_BASE_FILE = 'blockmap.base'
const DELTA_MAGIC = Buffer.from('LDBMDELT')
export const BLOCK_MAP_DELTA_VERSION = 1
/** A delta holds at most this fraction of the map's slots; past it a close saves the whole map. */
const DELTA_SLOTS_FRACTION = 8
const DELTA_MIN_LIMIT = 256

/** What a saved map reflects: a checkpoint of the index of one store. */
export interface BlockMapStamp {
  uuid: string
  blockBytes: number
  seq: number
  position: number
  timeMs: number
  slots: number
  /** Blocks mapped and of those trimmed (version 2 files and deltas; absent in version 1). */
  blocks?: number
  trimmed?: number
}

/** Which saved map a delta applies to: its stamp and the CRC32C ending its file. */
export interface BlockMapBase {
  seq: number
  position: number
  timeMs: number
  slots: number
  crc: number
}

/** Rows of a delta: blocks and their values now (seqs[i] === -1: no longer mapped). */
export interface BlockMapRows {
  keys: Float64Array
  positions: Float64Array
  seqs: Float64Array
  crcs: Uint32Array
}

export interface SavedBlockMap {
  /** What the map (with the delta, if any) reflects: a delta's stamp, else the file's. */
  stamp: BlockMapStamp
  /** The table: read at once, or (a read-only open of a version 2 file) by readTables. */
  tables?: BlockMapTables
  /** Reads and checks the deferred table, then closes the file; `release` closes it unread. */
  deferred?: { readTables: () => Promise<{ tables: BlockMapTables } | { why: string }>, release: () => Promise<void> }
  /** The file's own identity, which a delta written later names. */
  base: BlockMapBase
  /** A table in the dense layout (version 3): `slots` rows of DENSE_ROW_BYTES. */
  dense: boolean
  /** Changes since `base`, to apply after adopting `tables`. */
  delta?: BlockMapRows
}

/** A saved map read at open, or why there is none to use. */
export type TakenBlockMap = { saved: SavedBlockMap } | { why: string }

/**
 * Writes the map as the index's checkpoint `checkpoint` holds it: only the blocks changed since
 * the map this open loaded (a delta) when the map tracked them and that map waits as the base,
 * else the whole map (atomic publish either way).
 */
export async function saveBlockMap (layer: FileLayer, indexDir: string, map: BlockMap, store: { uuid: string, blockBytes: number }, checkpoint: Checkpoint): Promise<void> {
  if (os.endianness() !== 'LE') return // the arrays are written as they are in memory
  await layer.mkdirp(indexDir) // there already, except on a simulated disk (the index is in memory)
  const names = await layer.list(indexDir)
  const changes = map.changesSince()
  if (changes && names.includes(BLOCK_MAP_BASE_FILE)) {
    await saveDelta(layer, indexDir, map, store, checkpoint, changes.mark as BlockMapBase, changes.blocks)
    return
  }
  await saveWholeMap(layer, indexDir, map, store, checkpoint)
  // A delta left of an earlier base names a base that is gone: removed all the same.
  const leftovers = [BLOCK_MAP_BASE_FILE, BLOCK_MAP_DELTA_FILE, DELTA_TEMP_FILE].filter(n => names.includes(n))
  for (const name of leftovers) await layer.remove(path.join(indexDir, name))
  if (leftovers.length > 0) await layer.syncDir(indexDir)
}

/** How many changed blocks a delta may hold for a map of `slots` slots. */
export function deltaLimit (slots: number): number {
  return Math.max(DELTA_MIN_LIMIT, Math.floor(slots / DELTA_SLOTS_FRACTION))
}

async function saveWholeMap (layer: FileLayer, indexDir: string, map: BlockMap, store: { uuid: string, blockBytes: number }, checkpoint: Checkpoint): Promise<void> {
  const t = map.tables()
  const stamp: BlockMapStamp = { uuid: store.uuid, blockBytes: store.blockBytes, seq: checkpoint.seq, position: checkpoint.position, timeMs: checkpoint.timeMs, slots: t.positions.length, blocks: map.count, trimmed: map.trimmed }
  const arrays = t.keys ? [t.keys, t.positions, t.seqs, t.crcs] : [t.positions, t.seqs, t.crcs]
  const body = [headerOf(MAGIC, t.keys ? BLOCK_MAP_FILE_VERSION : BLOCK_MAP_FILE_VERSION_DENSE, stamp, true), ...arrays.map(bytesOf)]
  await publishFile(layer, path.join(indexDir, BLOCK_MAP_FILE), indexDir, [...body, trailerOf(body)])
}

/** The delta, then the base back under its name: until that rename there is no `blockmap`. */
async function saveDelta (layer: FileLayer, indexDir: string, map: BlockMap, store: { uuid: string, blockBytes: number }, checkpoint: Checkpoint, base: BlockMapBase, blocks: Set<number>): Promise<void> {
  const keys = Float64Array.from(blocks).sort()
  const rows: BlockMapRows = { keys, positions: new Float64Array(keys.length), seqs: new Float64Array(keys.length), crcs: new Uint32Array(keys.length) }
  const v = new Float64Array(3)
  for (let i = 0; i < keys.length; i++) {
    if (map.lookup(keys[i], v)) {
      rows.positions[i] = v[0]
      rows.seqs[i] = v[1]
      rows.crcs[i] = v[2]
    } else {
      rows.seqs[i] = -1
    }
  }
  const stamp = { uuid: store.uuid, blockBytes: store.blockBytes, seq: checkpoint.seq, position: checkpoint.position, timeMs: checkpoint.timeMs, slots: base.slots, blocks: map.count, trimmed: map.trimmed, base, rows: keys.length }
  const body = [headerOf(DELTA_MAGIC, BLOCK_MAP_DELTA_VERSION, stamp), ...[rows.keys, rows.positions, rows.seqs, rows.crcs].map(bytesOf)]
  await publishFile(layer, path.join(indexDir, BLOCK_MAP_DELTA_FILE), indexDir, [...body, trailerOf(body)])
  await layer.rename(path.join(indexDir, BLOCK_MAP_BASE_FILE), path.join(indexDir, BLOCK_MAP_FILE))
  await layer.syncDir(indexDir)
}

/** The header: magic, version, stamp, and (`checked`: a block map of version 2) its own CRC32C. */
function headerOf (magic: Buffer, version: number, stamp: object, checked = false): Buffer {
  const json = Buffer.from(JSON.stringify(stamp))
  const header = Buffer.alloc(headerBytesOf(json.length, checked))
  magic.copy(header, 0)
  header.writeUInt32LE(version, 8)
  header.writeUInt32LE(json.length, 12)
  json.copy(header, HEADER_BYTES)
  if (checked) header.writeUInt32LE(crc32c(header.subarray(0, HEADER_BYTES + json.length)), HEADER_BYTES + json.length)
  return header
}

/** Bytes of a header whose stamp is `jsonBytes` long, padded so the arrays after it are aligned. */
function headerBytesOf (jsonBytes: number, checked: boolean): number {
  return HEADER_BYTES + Math.ceil((jsonBytes + (checked ? 4 : 0)) / 8) * 8
}

function bytesOf (a: Float64Array | Uint32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength)
}

function trailerOf (body: Buffer[]): Buffer {
  let crc = 0
  for (const b of body) crc = crc32c(b, crc)
  const trailer = Buffer.alloc(4)
  trailer.writeUInt32LE(crc, 0)
  return trailer
}

/**
 * Reads the saved map, if any, with its delta when the delta names it, and (unless `keep`)
 * makes sure before returning that no `blockmap` is left that a later open could take for the
 * state of an index this open is about to change: a usable file becomes `blockmap.base` (the
 * base of the next close's delta), anything else (a damaged file, a delta, temporary files,
 * an older base) is deleted, and the directory synced. Throws only when a file cannot be
 * renamed or deleted.
 */
export async function takeBlockMap (layer: FileLayer, indexDir: string, keep: boolean): Promise<TakenBlockMap> {
  let names: string[]
  try {
    names = await layer.list(indexDir)
  } catch {
    return { why: 'no saved block map (no index directory)' }
  }
  // A read-only open (keep) defers a version 2 table: only a command that needs it reads it.
  const taken = names.includes(BLOCK_MAP_FILE) ? await readBlockMap(layer, path.join(indexDir, BLOCK_MAP_FILE), keep) : { why: 'no saved block map (the store was not closed cleanly, or it was opened for writing since)' }
  if ('saved' in taken && names.includes(BLOCK_MAP_DELTA_FILE)) {
    const delta = await readDelta(layer, path.join(indexDir, BLOCK_MAP_DELTA_FILE), taken.saved)
    // A delta of another base (or damaged) is not used: the base alone is then stale by its stamp.
    if ('rows' in delta) Object.assign(taken.saved, { stamp: delta.stamp, delta: delta.rows })
  }
  if (!keep) {
    const kept = 'saved' in taken
    if (kept) await layer.rename(path.join(indexDir, BLOCK_MAP_FILE), path.join(indexDir, BLOCK_MAP_BASE_FILE))
    const leftovers = [TEMP_FILE, BLOCK_MAP_DELTA_FILE, DELTA_TEMP_FILE, ...(kept ? [] : [BLOCK_MAP_FILE, BLOCK_MAP_BASE_FILE])].filter(n => names.includes(n))
    for (const name of leftovers) await layer.remove(path.join(indexDir, name))
    if (kept || leftovers.length > 0) await layer.syncDir(indexDir)
  }
  return taken
}

/** Removes a saved map, its base and delta (a tool that changes the index without opening the store: adopt). */
export async function dropBlockMap (layer: FileLayer, indexDir: string): Promise<void> {
  let names: string[]
  try {
    names = await layer.list(indexDir)
  } catch {
    return
  }
  const all = [BLOCK_MAP_FILE, TEMP_FILE, BLOCK_MAP_BASE_FILE, BLOCK_MAP_DELTA_FILE, DELTA_TEMP_FILE].filter(n => names.includes(n))
  for (const name of all) await layer.remove(path.join(indexDir, name))
  if (all.length > 0) await layer.syncDir(indexDir)
}

/**
 * Makes `map` the saved map: its table, then its delta's rows (deleted, then set). Returns why
 * it was refused, with `map` untouched (the rows are checked before anything is taken).
 * `tables`: the table read since, of a deferred map.
 */
export function adoptSavedMap (map: BlockMap, saved: SavedBlockMap, tables = saved.tables): string | undefined {
  const { delta } = saved
  if (!tables) return 'its table was not read'
  const badRow = delta?.keys.find(block => !Number.isSafeInteger(block) || block < 0)
  if (badRow !== undefined) return `its delta names block ${badRow}`
  const refused = map.adopt(tables)
  if (refused !== undefined) return refused
  if (delta) {
    for (let i = 0; i < delta.keys.length; i++) {
      map.delete(delta.keys[i])
      if (delta.seqs[i] >= 0) map.set(delta.keys[i], delta.positions[i], delta.crcs[i], delta.seqs[i])
    }
  }
  return undefined
}

/** Whether a saved map describes the index as it is now: `checkpoint` read before any change. */
export function stampMismatch (stamp: BlockMapStamp, store: { uuid: string, blockBytes: number }, checkpoint: Checkpoint | undefined): string | undefined {
  if (stamp.uuid !== store.uuid || stamp.blockBytes !== store.blockBytes) return `it belongs to store ${stamp.uuid} with ${stamp.blockBytes}-byte blocks`
  if (!checkpoint) return 'the index has no checkpoint'
  if (stamp.seq !== checkpoint.seq || stamp.position !== checkpoint.position || stamp.timeMs !== checkpoint.timeMs) {
    return `it reflects checkpoint seq ${stamp.seq} at ${stamp.position} (time ${stamp.timeMs}), the index is at seq ${checkpoint.seq} at ${checkpoint.position} (time ${checkpoint.timeMs})`
  }
  return undefined
}

async function readBlockMap (layer: FileLayer, file: string, defer: boolean): Promise<TakenBlockMap> {
  if (os.endianness() !== 'LE') return { why: 'saved block maps are little-endian' }
  let h: FileHandle
  try {
    h = await layer.open(file, false)
  } catch (err) {
    return { why: `saved block map unreadable: ${(err as Error).message}` }
  }
  let keepOpen = false
  try {
    const size = await h.size()
    const head = Buffer.alloc(HEADER_BYTES)
    if (await readUpTo(h, head, 0) < HEADER_BYTES || !head.subarray(0, 8).equals(MAGIC)) return { why: 'saved block map damaged: no header' }
    const version = head.readUInt32LE(8)
    if (version !== BLOCK_MAP_FILE_VERSION && version !== BLOCK_MAP_FILE_VERSION_1 && version !== BLOCK_MAP_FILE_VERSION_DENSE) return { why: `saved block map of version ${version}; this release reads versions ${BLOCK_MAP_FILE_VERSION_1} to ${BLOCK_MAP_FILE_VERSION_DENSE}` }
    const checked = version !== BLOCK_MAP_FILE_VERSION_1
    const dense = version === BLOCK_MAP_FILE_VERSION_DENSE
    const rowBytes = dense ? DENSE_ROW_BYTES : SLOT_BYTES
    const jsonBytes = head.readUInt32LE(12)
    const headerBytes = headerBytesOf(jsonBytes, checked)
    if (headerBytes + 4 > size) return { why: 'saved block map damaged: truncated header' }
    const header = Buffer.alloc(headerBytes)
    await readUpTo(h, header, 0)
    if (checked && crc32c(header.subarray(0, HEADER_BYTES + jsonBytes)) !== header.readUInt32LE(HEADER_BYTES + jsonBytes)) return { why: 'saved block map damaged: header checksum mismatch' }
    let stamp: BlockMapStamp
    try {
      stamp = JSON.parse(header.subarray(HEADER_BYTES, HEADER_BYTES + jsonBytes).toString('utf8')) as BlockMapStamp
    } catch {
      return { why: 'saved block map damaged: stamp unreadable' }
    }
    const slots = stamp.slots
    if (!Number.isSafeInteger(slots) || slots <= 0 || headerBytes + slots * rowBytes + 4 !== size) {
      return { why: `saved block map damaged: ${size} bytes do not hold ${slots} slots` }
    }
    if (!checked) {
      // Version 1 counts are not in the stamp (and nothing vouches for a stamp alone): read whole.
      delete stamp.blocks
      delete stamp.trimmed
    }
    const readTables = async (): Promise<{ tables: BlockMapTables, crc: number } | { why: string }> => {
      const tables: BlockMapTables = { ...(dense ? {} : { keys: new Float64Array(slots) }), positions: new Float64Array(slots), seqs: new Float64Array(slots), crcs: new Uint32Array(slots) }
      let crc = crc32c(header)
      let at = headerBytes
      for (const a of tables.keys ? [tables.keys, tables.positions, tables.seqs, tables.crcs] : [tables.positions, tables.seqs, tables.crcs]) {
        const bytes = Buffer.from(a.buffer, a.byteOffset, a.byteLength)
        // A piece at a time, each checked while it is still in the CPU's cache: the CRC of a
        // whole 8 MiB array read back from memory took 3-5x as long (20-80 ms of an open).
        for (let off = 0; off < bytes.length; off += READ_PIECE_BYTES) {
          const piece = bytes.subarray(off, Math.min(bytes.length, off + READ_PIECE_BYTES))
          if (await readUpTo(h, piece, at) !== piece.length) return { why: 'saved block map damaged: truncated' }
          crc = crc32c(piece, crc)
          at += piece.length
        }
      }
      const trailer = Buffer.alloc(4)
      if (await readUpTo(h, trailer, at) !== 4 || trailer.readUInt32LE(0) !== crc) return { why: 'saved block map damaged: checksum mismatch' }
      return { tables, crc }
    }
    const base = (crc: number): BlockMapBase => ({ seq: stamp.seq, position: stamp.position, timeMs: stamp.timeMs, slots, crc })
    if (defer && checked) {
      // The CRC the file ends with names it for a delta now; it is checked with the table.
      const trailer = Buffer.alloc(4)
      if (await readUpTo(h, trailer, size - 4) !== 4) return { why: 'saved block map damaged: truncated' }
      let open = true
      const release = async (): Promise<void> => {
        if (open) await h.close()
        open = false
      }
      keepOpen = true
      return {
        saved: {
          stamp,
          base: base(trailer.readUInt32LE(0)),
          dense,
          deferred: {
            readTables: async () => {
              if (!open) return { why: 'saved block map already closed' }
              try {
                const read = await readTables()
                return 'why' in read ? read : { tables: read.tables }
              } finally {
                await release()
              }
            },
            release
          }
        }
      }
    }
    const read = await readTables()
    if ('why' in read) return read
    return { saved: { stamp, tables: read.tables, base: base(read.crc), dense } }
  } finally {
    if (!keepOpen) await h.close()
  }
}

/**
 * Reads a delta and checks it whole (CRC32C) and against the base it must name: the same
 * store and block size, the base's stamp and CRC. Returns the stamp the map then reflects.
 */
async function readDelta (layer: FileLayer, file: string, base: SavedBlockMap): Promise<{ stamp: BlockMapStamp, rows: BlockMapRows } | { why: string }> {
  let bytes: Buffer
  let h
  try {
    h = await layer.open(file, false)
  } catch (err) {
    return { why: `block map delta unreadable: ${(err as Error).message}` }
  }
  try {
    bytes = Buffer.alloc(await h.size())
    if (await readUpTo(h, bytes, 0) !== bytes.length) return { why: 'block map delta truncated' }
  } finally {
    await h.close()
  }
  if (bytes.length < HEADER_BYTES + 4 || !bytes.subarray(0, 8).equals(DELTA_MAGIC)) return { why: 'block map delta damaged: no header' }
  if (bytes.readUInt32LE(8) !== BLOCK_MAP_DELTA_VERSION) return { why: `block map delta of version ${bytes.readUInt32LE(8)}` }
  if (crc32c(bytes.subarray(0, bytes.length - 4)) !== bytes.readUInt32LE(bytes.length - 4)) return { why: 'block map delta damaged: checksum mismatch' }
  const jsonBytes = bytes.readUInt32LE(12)
  const headerBytes = HEADER_BYTES + Math.ceil(jsonBytes / 8) * 8
  let stamp: BlockMapStamp & { base: BlockMapBase, rows: number }
  try {
    stamp = JSON.parse(bytes.subarray(HEADER_BYTES, HEADER_BYTES + jsonBytes).toString('utf8'))
  } catch {
    return { why: 'block map delta damaged: stamp unreadable' }
  }
  const n = stamp.rows
  if (!Number.isSafeInteger(n) || n < 0 || headerBytes + n * SLOT_BYTES + 4 !== bytes.length) return { why: 'block map delta damaged: wrong size' }
  const b = base.base
  const named = stamp.base
  if (stamp.uuid !== base.stamp.uuid || stamp.blockBytes !== base.stamp.blockBytes || !named ||
    named.seq !== b.seq || named.position !== b.position || named.timeMs !== b.timeMs || named.slots !== b.slots || named.crc !== b.crc) {
    return { why: 'block map delta of another saved map' }
  }
  // Copied out into aligned arrays (the rows start at a multiple of 8 bytes, but in a buffer that may not).
  const column = (k: number, size: number): ArrayBuffer => (bytes.buffer as ArrayBuffer).slice(bytes.byteOffset + headerBytes + k * 8 * n, bytes.byteOffset + headerBytes + k * 8 * n + size * n)
  const rows: BlockMapRows = { keys: new Float64Array(column(0, 8)), positions: new Float64Array(column(1, 8)), seqs: new Float64Array(column(2, 8)), crcs: new Uint32Array(column(3, 4)) }
  // Counts only from a delta that has them (the release before version 2 maps wrote none).
  const counts = Number.isSafeInteger(stamp.blocks) && Number.isSafeInteger(stamp.trimmed) ? { blocks: stamp.blocks, trimmed: stamp.trimmed } : {}
  return { stamp: { uuid: stamp.uuid, blockBytes: stamp.blockBytes, seq: stamp.seq, position: stamp.position, timeMs: stamp.timeMs, slots: stamp.slots, ...counts }, rows }
}
