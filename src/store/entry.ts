import { crc32c } from './crc'
import { BLOCK_CRC_BYTES, ENTRY_HEADER_BYTES, ENTRY_MAGIC, ENTRY_VERSION, EntryKind, LAST_ENTRY_KIND, LEGACY_ENTRY_VERSION, MOVE_RECORD_BYTES, TRIM_MOVE_RECORD_BYTES } from './format'

/**
 * One record of the log. Layout (little-endian), 64-byte header:
 *
 *   0 u32 magic "LDEN"      4 u8 kind    5 u8 version  6 u16 reserved
 *   8 u64 seq              16 u64 timeMs
 *  24 u64 block (first)    32 u32 count (blocks; 0 for markers)
 *  36 u32 payloadBytes (bytes after the header and the CRC table)
 *  40 u32 payloadCrc (markers: CRC32C of the payload; writes: 0)
 *  44 u64 durableSeq (version 2; version 1: zero)  52..60 reserved (zero)
 *  60 u32 headerCrc = CRC32C(header[0..60) ++ crc table)
 *
 * A write entry is followed by `count` u32 block CRCs, then `count` blocks of data, so any
 * block can be verified alone (a 4 KiB read of a 128 KiB entry reads 4 KiB). A marker entry
 * is followed by its msgpack payload.
 */
export interface EntryHeader {
  kind: EntryKind
  seq: number
  timeMs: number
  block: number
  count: number
  payloadBytes: number
  payloadCrc: number
  /**
   * Every entry with a seq at or below it was made durable by a completed flush (fdatasync of
   * every segment up to it) before this entry was written: a later entry that says so proves
   * an earlier one was flushed, so bad data in it is damage, not a torn write (recovery.ts).
   * Undefined in version-1 entries (older releases), which do not say.
   */
  durableSeq?: number
}

/** Whether entries of this kind hold versions of blocks (data or trims) rather than a marker's payload. */
export function holdsVersions (kind: number): boolean {
  return kind === EntryKind.write || kind === EntryKind.move || kind === EntryKind.trim || kind === EntryKind.trimMove
}

/** Bytes of the header and the per-block table that follows it. */
export function tableBytes (h: Pick<EntryHeader, 'kind' | 'count'>): number {
  if (h.kind === EntryKind.trim) return ENTRY_HEADER_BYTES // `count` blocks, but no table and no data
  if (h.kind === EntryKind.trimMove) return ENTRY_HEADER_BYTES + h.count * TRIM_MOVE_RECORD_BYTES // `count` runs, no data
  return ENTRY_HEADER_BYTES + h.count * (h.kind === EntryKind.move ? MOVE_RECORD_BYTES : BLOCK_CRC_BYTES)
}

export function entryBytes (h: Pick<EntryHeader, 'kind' | 'count' | 'payloadBytes'>): number {
  return tableBytes(h) + h.payloadBytes
}

function writeU64 (buf: Buffer, value: number, offset: number): void {
  buf.writeUInt32LE(value % 0x100000000, offset)
  buf.writeUInt32LE(Math.floor(value / 0x100000000), offset + 4)
}

function readU64 (buf: Buffer, offset: number): number {
  return buf.readUInt32LE(offset) + buf.readUInt32LE(offset + 4) * 0x100000000
}

/** Builds header + CRC table for a write entry; `blockCrcs` are CRC32C of each block. */
export function encodeWriteHeader (seq: number, timeMs: number, block: number, blockCrcs: Uint32Array, blockBytes: number, durableSeq?: number): Buffer {
  const count = blockCrcs.length
  const buf = Buffer.alloc(ENTRY_HEADER_BYTES + count * BLOCK_CRC_BYTES)
  fillHeader(buf, { kind: EntryKind.write, seq, timeMs, block, count, payloadBytes: count * blockBytes, payloadCrc: 0, durableSeq })
  for (let i = 0; i < count; i++) buf.writeUInt32LE(blockCrcs[i], ENTRY_HEADER_BYTES + i * BLOCK_CRC_BYTES)
  sealHeader(buf)
  return buf
}

/**
 * Builds header + table of a move entry: versions compaction moves to the head of the log
 * keep their block and original sequence number, so every cut still sees them (a rebuild
 * from the log puts them back where they were in time).
 */
export function encodeMoveHeader (seq: number, timeMs: number, versions: Array<{ block: number, seq: number, crc: number }>, blockBytes: number, durableSeq?: number): Buffer {
  const count = versions.length
  const buf = Buffer.alloc(ENTRY_HEADER_BYTES + count * MOVE_RECORD_BYTES)
  fillHeader(buf, { kind: EntryKind.move, seq, timeMs, block: 0, count, payloadBytes: count * blockBytes, payloadCrc: 0, durableSeq })
  versions.forEach((v, i) => {
    const at = ENTRY_HEADER_BYTES + i * MOVE_RECORD_BYTES
    writeU64(buf, v.block, at)
    writeU64(buf, v.seq, at + 8)
    buf.writeUInt32LE(v.crc, at + 16)
  })
  sealHeader(buf)
  return buf
}

/** Block, original seq and CRC of the i-th version of a move entry. */
export function moveRecordAt (table: Buffer, i: number): { block: number, seq: number, crc: number } {
  const at = ENTRY_HEADER_BYTES + i * MOVE_RECORD_BYTES
  return { block: readU64(table, at), seq: readU64(table, at + 8), crc: table.readUInt32LE(at + 16) }
}

/** A trim entry: `count` blocks from `block` read as zeros from `seq` on (no data, no table). */
export function encodeTrim (seq: number, timeMs: number, block: number, count: number, durableSeq?: number): Buffer {
  const buf = Buffer.alloc(ENTRY_HEADER_BYTES)
  fillHeader(buf, { kind: EntryKind.trim, seq, timeMs, block, count, payloadBytes: 0, payloadCrc: 0, durableSeq })
  sealHeader(buf)
  return buf
}

/** A run of trimmed versions a trim move entry holds: blocks [block, block+count) trimmed at `seq`. */
export interface TrimRun { block: number, seq: number, count: number }

/**
 * A trim move entry (store format 5): trimmed versions compaction moves to the head of the
 * log, as `encodeMoveHeader` moves data, so that the segment of their trim entry can go. Each
 * run keeps its original sequence number: a rebuild from the log puts the trim back where it
 * was in time (without it, a rebuild would bring back the data it hid where that data's bytes
 * are still in the log).
 */
export function encodeTrimMove (seq: number, timeMs: number, runs: TrimRun[], durableSeq?: number): Buffer {
  const buf = Buffer.alloc(ENTRY_HEADER_BYTES + runs.length * TRIM_MOVE_RECORD_BYTES)
  fillHeader(buf, { kind: EntryKind.trimMove, seq, timeMs, block: 0, count: runs.length, payloadBytes: 0, payloadCrc: 0, durableSeq })
  runs.forEach((r, i) => {
    const at = ENTRY_HEADER_BYTES + i * TRIM_MOVE_RECORD_BYTES
    writeU64(buf, r.block, at)
    writeU64(buf, r.seq, at + 8)
    buf.writeUInt32LE(r.count, at + 16)
  })
  sealHeader(buf)
  return buf
}

/** The i-th run of a trim move entry. */
export function trimRunAt (table: Buffer, i: number): TrimRun {
  const at = ENTRY_HEADER_BYTES + i * TRIM_MOVE_RECORD_BYTES
  return { block: readU64(table, at), seq: readU64(table, at + 8), count: table.readUInt32LE(at + 16) }
}

/** Builds a whole marker entry (sync, snapshot, ...) around an already encoded payload. */
export function encodeMarker (kind: EntryKind, seq: number, timeMs: number, payload: Buffer, durableSeq?: number): Buffer {
  const buf = Buffer.alloc(ENTRY_HEADER_BYTES + payload.length)
  fillHeader(buf, { kind, seq, timeMs, block: 0, count: 0, payloadBytes: payload.length, payloadCrc: crc32c(payload), durableSeq })
  payload.copy(buf, ENTRY_HEADER_BYTES)
  sealHeader(buf.subarray(0, ENTRY_HEADER_BYTES))
  return buf
}

/**
 * In a free entry's payloadCrc field (free entries have no payload to check): the history
 * this run gave up is recorded by a history marker (format 2). Format-1 free entries carry 0,
 * and a rebuild can only guess their horizon from the run's sequence numbers.
 */
export const FREE_HORIZON_IN_MARKER = 1

/**
 * The header that replaces a run of freed entries (in-place compaction, 001 Fig. 6): it spans
 * `totalBytes` from its own start, whose data is punched out; a scan jumps over it. Its
 * `durableSeq` is the log's when it is written (later than the run's entries: it says more).
 */
export function encodeFree (firstSeq: number, lastSeq: number, timeMs: number, totalBytes: number, durableSeq?: number): Buffer {
  const buf = Buffer.alloc(ENTRY_HEADER_BYTES)
  fillHeader(buf, { kind: EntryKind.free, seq: firstSeq, timeMs, block: lastSeq, count: 0, payloadBytes: totalBytes - ENTRY_HEADER_BYTES, payloadCrc: FREE_HORIZON_IN_MARKER, durableSeq })
  sealHeader(buf)
  return buf
}

/**
 * Without `durableSeq` the entry is version 1, as older releases wrote it (tests build such
 * logs); the appender always gives it.
 */
function fillHeader (buf: Buffer, h: EntryHeader): void {
  buf.writeUInt32LE(ENTRY_MAGIC, 0)
  buf.writeUInt8(h.kind, 4)
  buf.writeUInt8(h.durableSeq === undefined ? LEGACY_ENTRY_VERSION : ENTRY_VERSION, 5)
  writeU64(buf, h.seq, 8)
  writeU64(buf, h.timeMs, 16)
  writeU64(buf, h.block, 24)
  buf.writeUInt32LE(h.count, 32)
  buf.writeUInt32LE(h.payloadBytes, 36)
  buf.writeUInt32LE(h.payloadCrc, 40)
  if (h.durableSeq !== undefined) writeU64(buf, h.durableSeq, 44)
}

/** Writes headerCrc over the header and the CRC table that follows it in `buf`. */
function sealHeader (buf: Buffer): void {
  let crc = crc32c(buf.subarray(0, 60))
  if (buf.length > ENTRY_HEADER_BYTES) crc = crc32c(buf.subarray(ENTRY_HEADER_BYTES), crc)
  buf.writeUInt32LE(crc, 60)
}

/**
 * Parses a header from `buf` (at least ENTRY_HEADER_BYTES). Returns undefined when the bytes are
 * not an entry header (bad magic, unknown kind, impossible sizes); the header CRC is checked
 * by `verifyHeader` once the CRC table is available.
 */
export function decodeHeader (buf: Buffer, offset = 0): EntryHeader | undefined {
  if (buf.length - offset < ENTRY_HEADER_BYTES) return undefined
  if (buf.readUInt32LE(offset) !== ENTRY_MAGIC) return undefined
  const kind = buf.readUInt8(offset + 4) as EntryKind
  if (kind < EntryKind.write || kind > LAST_ENTRY_KIND) return undefined
  const version = buf.readUInt8(offset + 5) // entry layout version
  if (version !== LEGACY_ENTRY_VERSION && version !== ENTRY_VERSION) return undefined
  return {
    kind,
    seq: readU64(buf, offset + 8),
    timeMs: readU64(buf, offset + 16),
    block: readU64(buf, offset + 24),
    count: buf.readUInt32LE(offset + 32),
    payloadBytes: buf.readUInt32LE(offset + 36),
    payloadCrc: buf.readUInt32LE(offset + 40),
    durableSeq: version === ENTRY_VERSION ? readU64(buf, offset + 44) : undefined
  }
}

/** `headerAndTable` = the 64-byte header followed by count*4 bytes of CRC table. */
export function verifyHeader (headerAndTable: Buffer): boolean {
  let crc = crc32c(headerAndTable.subarray(0, 60))
  if (headerAndTable.length > ENTRY_HEADER_BYTES) crc = crc32c(headerAndTable.subarray(ENTRY_HEADER_BYTES), crc)
  return crc === headerAndTable.readUInt32LE(60)
}

export function blockCrcAt (headerAndTable: Buffer, i: number): number {
  return headerAndTable.readUInt32LE(ENTRY_HEADER_BYTES + i * BLOCK_CRC_BYTES)
}
