/**
 * The whole key layout of a store's LevelDB index, in one place (after hypercore-storage's
 * lib/keys.js). Numbers are big-endian so that LevelDB's byte order is numeric order.
 *
 *   'c'                           -> checkpoint: msgpack { seq, position, timeMs }
 *                                    (every entry before `position` is reflected in the index)
 *   'x' u64 chunk, u64 seq        -> history record (history-record.ts): the versions entry
 *                                    `seq` made of the blocks of chunk `chunk` (CHUNK_BLOCKS
 *                                    blocks each): runs of [first, count, base position, step,
 *                                    crcs]. Layout 3; one row per entry and chunk, not per block.
 *                                    The version of block b visible at a cut S (a snapshot, a
 *                                    sync point) is in the newest record of b's chunk with
 *                                    seq <= S that holds b: a reverse seek and a walk down that
 *                                    chunk's records, whatever the number of snapshots. A scan
 *                                    of the whole range rebuilds any past state.
 *   'h' u64 block, u64 seq        -> layout 2's history, one key per block version: f64
 *                                    position, u32 crc. Only read, to convert (IndexDb.upgrade)
 *                                    and in a replica's older index checkpoints.
 *   'g' u64 segmentId             -> segment record: msgpack { state, ... }
 *   'e' u64 seq                   -> entry summary: msgpack { kind, timeMs, position, block,
 *                                    count, payload? }: one per log entry (not per block), so
 *                                    `log` lists entries and a time maps to a sequence number
 *                                    (times never decrease along the log) without reading data.
 *   's' u64 cut seq               -> snapshot: msgpack { id, name, seq, position, timeMs, ... }
 *   'n' <name>                    -> store-wide counters: msgpack number (highest volume id)
 *   'r' u64 seq                   -> a resize: msgpack { fromBytes, toBytes }, from the sync
 *                                    marker with a `resize` payload at `seq` (snapshots.ts
 *                                    ResizeRecord): what the volume's size was at any point
 *   'v'                           -> index layout version (INDEX_FORMAT_VERSION), msgpack
 *   'p'                           -> in-place header writes in flight (compaction's free
 *                                    headers): msgpack { segment, volumes, headers: [[offset,
 *                                    bytes]] }, synced before they are written and redone on
 *                                    open, so a header torn by a crash is rewritten whole; the
 *                                    same record is in <store>/pending-headers
 *                                    (pending-headers.ts), which a rebuild reads too
 *   'l'                           -> where the log ended at the last clean close: msgpack
 *                                    { seq, position }, synced; removed (synced) by the next
 *                                    open that writes, before it appends (recovery.ts: what
 *                                    follows it was written by another copy of the store)
 */
export const CHECKPOINT_KEY = Buffer.from('c')
export const VERSION_KEY = Buffer.from('v')
export const PENDING_HEADERS_KEY = Buffer.from('p')
export const CLEAN_CLOSE_KEY = Buffer.from('l')
export const HISTORY_PREFIX = 0x68 // 'h' (layout 2)
export const RECORD_PREFIX = 0x78 // 'x'
export const SEGMENT_PREFIX = 0x67 // 'g'
export const ENTRY_PREFIX = 0x65 // 'e'
export const SNAPSHOT_PREFIX = 0x73 // 's'
export const COUNTER_PREFIX = 0x6e // 'n'
export const RESIZE_PREFIX = 0x72 // 'r'

export function counterKey (name: string): Buffer {
  return Buffer.concat([Buffer.from([COUNTER_PREFIX]), Buffer.from(name)])
}

function writeU64BE (buf: Buffer, value: number, offset: number): void {
  buf.writeUInt32BE(Math.floor(value / 0x100000000), offset)
  buf.writeUInt32BE(value % 0x100000000, offset + 4)
}

export function readU64BE (buf: Buffer, offset: number): number {
  return buf.readUInt32BE(offset) * 0x100000000 + buf.readUInt32BE(offset + 4)
}

/** A prefix byte, then two u64 BE numbers (17 bytes): the history keys of both layouts. */
function pairKey (prefix: number, a: number, b: number): Buffer {
  const key = Buffer.allocUnsafe(17)
  key[0] = prefix
  writeU64BE(key, a, 1)
  writeU64BE(key, b, 9)
  return key
}

export function historyKey (block: number, seq: number): Buffer {
  return pairKey(HISTORY_PREFIX, block, seq)
}

export function recordKey (chunk: number, seq: number): Buffer {
  return pairKey(RECORD_PREFIX, chunk, seq)
}

export function decodeRecordKey (key: Buffer): { chunk: number, seq: number } {
  return { chunk: readU64BE(key, 1), seq: readU64BE(key, 9) }
}

export function historyValue (position: number, crc: number): Buffer {
  const value = Buffer.allocUnsafe(12)
  value.writeDoubleBE(position, 0)
  value.writeUInt32BE(crc, 8)
  return value
}

export function decodeHistory (key: Buffer, value: Buffer): { block: number, seq: number, position: number, crc: number } {
  return { block: readU64BE(key, 1), seq: readU64BE(key, 9), position: value.readDoubleBE(0), crc: value.readUInt32BE(8) }
}

/** Range bounds of all keys with one prefix byte. */
export function prefixRange (prefix: number): { gte: Buffer, lt: Buffer } {
  return { gte: Buffer.from([prefix]), lt: Buffer.from([prefix + 1]) }
}

export function numberKey (prefix: number, n: number): Buffer {
  const key = Buffer.allocUnsafe(9)
  key[0] = prefix
  writeU64BE(key, n, 1)
  return key
}
