import os from 'node:os'
import path from 'node:path'
import { BlockMap, type BlockMapTables } from './block-map'
import { crc32c } from './crc'
import { publishFile, publishTempOf, readUpTo, type FileLayer } from './file-layer'
import type { Checkpoint } from './index-db'

/**
 * The block map saved at a clean close, so that the next open loads it in one read instead of
 * scanning every history key of the index (issue 11; about 10 s for an 8 GiB disk).
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
 * Layout (little-endian, docs/FORMAT.md):
 *
 *   magic 'LDBLKMAP' | u32 version | u32 stamp bytes | stamp JSON, zero-padded to 8 bytes
 *   keys f64[slots] | positions f64[slots] | seqs f64[slots] | crcs u32[slots]
 *   u32 CRC32C of every byte before it
 *
 * Written as a temporary file, fsynced, renamed, directory fsynced (litestream's atomic
 * publish): a crash at any step leaves either no file, the temporary one (ignored and removed
 * by the next write open), or the whole file.
 */

export const BLOCK_MAP_FILE = 'blockmap'
const TEMP_FILE = publishTempOf(BLOCK_MAP_FILE)
const MAGIC = Buffer.from('LDBLKMAP')
export const BLOCK_MAP_FILE_VERSION = 1
const HEADER_BYTES = 16
const SLOT_BYTES = 28

/** What a saved map reflects: a checkpoint of the index of one store. */
export interface BlockMapStamp {
  uuid: string
  blockBytes: number
  seq: number
  position: number
  timeMs: number
  slots: number
}

export interface SavedBlockMap {
  stamp: BlockMapStamp
  tables: BlockMapTables
}

/** A saved map read at open, or why there is none to use. */
export type TakenBlockMap = { saved: SavedBlockMap } | { why: string }

/** Writes the map as the index's checkpoint `checkpoint` holds it (atomic publish). */
export async function saveBlockMap (layer: FileLayer, indexDir: string, map: BlockMap, store: { uuid: string, blockBytes: number }, checkpoint: Checkpoint): Promise<void> {
  if (os.endianness() !== 'LE') return // the arrays are written as they are in memory
  const t = map.tables()
  const stamp: BlockMapStamp = { uuid: store.uuid, blockBytes: store.blockBytes, seq: checkpoint.seq, position: checkpoint.position, timeMs: checkpoint.timeMs, slots: t.keys.length }
  const json = Buffer.from(JSON.stringify(stamp))
  const header = Buffer.alloc(HEADER_BYTES + Math.ceil(json.length / 8) * 8)
  MAGIC.copy(header, 0)
  header.writeUInt32LE(BLOCK_MAP_FILE_VERSION, 8)
  header.writeUInt32LE(json.length, 12)
  json.copy(header, HEADER_BYTES)
  const body = [header, ...[t.keys, t.positions, t.seqs, t.crcs].map(a => Buffer.from(a.buffer, a.byteOffset, a.byteLength))]
  let crc = 0
  for (const b of body) crc = crc32c(b, crc)
  const trailer = Buffer.alloc(4)
  trailer.writeUInt32LE(crc, 0)
  await layer.mkdirp(indexDir) // there already, except on a simulated disk (the index is in memory)
  await publishFile(layer, path.join(indexDir, BLOCK_MAP_FILE), indexDir, [...body, trailer])
}

/**
 * Reads the saved map, if any, and (unless `keep`) deletes it and any temporary one, the
 * directory synced, before returning: after this no file is left that a later open could
 * take for the state of an index this open is about to change. Throws only when a file
 * cannot be deleted.
 */
export async function takeBlockMap (layer: FileLayer, indexDir: string, keep: boolean): Promise<TakenBlockMap> {
  let names: string[]
  try {
    names = await layer.list(indexDir)
  } catch {
    return { why: 'no saved block map (no index directory)' }
  }
  const taken = names.includes(BLOCK_MAP_FILE) ? await readBlockMap(layer, path.join(indexDir, BLOCK_MAP_FILE)) : { why: 'no saved block map (the store was not closed cleanly, or it was opened for writing since)' }
  if (!keep) {
    const leftovers = [BLOCK_MAP_FILE, TEMP_FILE].filter(n => names.includes(n))
    for (const name of leftovers) await layer.remove(path.join(indexDir, name))
    if (leftovers.length > 0) await layer.syncDir(indexDir)
  }
  return taken
}

/** Removes a saved map (a tool that changes the index without opening the store: adopt). */
export async function dropBlockMap (layer: FileLayer, indexDir: string): Promise<void> {
  await takeBlockMap(layer, indexDir, false)
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

async function readBlockMap (layer: FileLayer, file: string): Promise<TakenBlockMap> {
  if (os.endianness() !== 'LE') return { why: 'saved block maps are little-endian' }
  let h
  try {
    h = await layer.open(file, false)
  } catch (err) {
    return { why: `saved block map unreadable: ${(err as Error).message}` }
  }
  try {
    const size = await h.size()
    const head = Buffer.alloc(HEADER_BYTES)
    if (await readUpTo(h, head, 0) < HEADER_BYTES || !head.subarray(0, 8).equals(MAGIC)) return { why: 'saved block map damaged: no header' }
    const version = head.readUInt32LE(8)
    if (version !== BLOCK_MAP_FILE_VERSION) return { why: `saved block map of version ${version}; this release reads version ${BLOCK_MAP_FILE_VERSION}` }
    const jsonBytes = head.readUInt32LE(12)
    const headerBytes = HEADER_BYTES + Math.ceil(jsonBytes / 8) * 8
    if (headerBytes > size) return { why: 'saved block map damaged: truncated header' }
    const header = Buffer.alloc(headerBytes)
    await readUpTo(h, header, 0)
    let stamp: BlockMapStamp
    try {
      stamp = JSON.parse(header.subarray(HEADER_BYTES, HEADER_BYTES + jsonBytes).toString('utf8')) as BlockMapStamp
    } catch {
      return { why: 'saved block map damaged: stamp unreadable' }
    }
    const slots = stamp.slots
    if (!Number.isSafeInteger(slots) || slots <= 0 || headerBytes + slots * SLOT_BYTES + 4 !== size) {
      return { why: `saved block map damaged: ${size} bytes do not hold ${slots} slots` }
    }
    const tables: BlockMapTables = { keys: new Float64Array(slots), positions: new Float64Array(slots), seqs: new Float64Array(slots), crcs: new Uint32Array(slots) }
    let crc = crc32c(header)
    let at = headerBytes
    for (const a of [tables.keys, tables.positions, tables.seqs, tables.crcs]) {
      const bytes = Buffer.from(a.buffer, a.byteOffset, a.byteLength)
      if (await readUpTo(h, bytes, at) !== bytes.length) return { why: 'saved block map damaged: truncated' }
      crc = crc32c(bytes, crc)
      at += bytes.length
    }
    const trailer = Buffer.alloc(4)
    if (await readUpTo(h, trailer, at) !== 4 || trailer.readUInt32LE(0) !== crc) return { why: 'saved block map damaged: checksum mismatch' }
    return { saved: { stamp, tables } }
  } finally {
    await h.close()
  }
}
