/**
 * On-disk constants. The layout is documented in docs/FORMAT.md; any change here bumps a
 * version and keeps the old one readable.
 */
/**
 * store.json's format. 2 adds the history marker entry (EntryKind.history); 3 adds entry
 * version 2 (ENTRY_VERSION: every entry records `durableSeq`, how far a flush had made the
 * log durable); 4 lets compaction free marker entries (marker-life.ts): a release before it
 * took a freed marker for a bare 64-byte header and wrote free headers too short over runs
 * ending with one, and its scans then lost the rest of the segment. An older store is read
 * as is and becomes the current format just before it first appends (LogAppender.upgradeFormat,
 * before any free header too), so that an older logdisk refuses it cleanly instead of cutting
 * its log at an entry kind or version it does not know. 5 adds the trim move entry
 * (EntryKind.trimMove): compaction moves trims that are still needed, as it moves data, so
 * that their segments can go (a release before it kept every segment holding one for good).
 */
export const STORE_FORMAT_VERSION = 5
export const READABLE_STORE_FORMATS = [1, 2, 3, 4, 5]
export const SEGMENT_FORMAT_VERSION = 1
/**
 * Layout of the LevelDB index (keys.ts). 3 keeps history in records of one entry and chunk
 * (history-record.ts) where 2 kept a key per block version: open converts a 2 in place
 * (IndexDb.upgrade); any other value makes open rebuild the index from the log.
 */
export const INDEX_FORMAT_VERSION = 3

/** Segment files start with a header page so that entries begin 4 KiB aligned. */
export const SEGMENT_HEADER_BYTES = 4096
export const SEGMENT_MAGIC = 'LOGDISK-SEGMENT\n' // 16 bytes

export const ENTRY_MAGIC = 0x4e45444c // "LDEN" little-endian
export const ENTRY_HEADER_BYTES = 64
/**
 * Entry layout version (header byte 5) of the entries this logdisk appends: 2 records
 * `durableSeq` at byte 44 (store format 3). Version 1 (formats 1 and 2) has zeros there;
 * both are read.
 */
export const ENTRY_VERSION = 2
export const LEGACY_ENTRY_VERSION = 1
/** Bytes of per-block CRC stored after a write entry's header. */
export const BLOCK_CRC_BYTES = 4
/** Bytes per block of a move entry's table: u64 block, u64 original seq, u32 CRC. */
export const MOVE_RECORD_BYTES = 20
/** Bytes per run of a trim move entry's table: u64 first block, u64 original seq, u32 blocks, u32 zero. */
export const TRIM_MOVE_RECORD_BYTES = 24
/** Most runs one trim move entry holds (a 48 KiB table). */
export const MAX_TRIM_MOVE_RUNS = 2048

/** Entry kinds: what one record of the log is. */
export const EntryKind = {
  write: 1, // block address, block count, per-block CRCs, data
  sync: 2, // a consistency point: time and a note (msgpack payload)
  snapshot: 3, // a snapshot cut (msgpack payload)
  deleteSnapshot: 4, // a snapshot was deleted (msgpack payload)
  free: 5, // a run of entries whose data compaction freed: `seq` is the run's first, `block` its last
  move: 6, // live versions moved by compaction: per block (block, original seq, CRC), then data
  history: 7, // compaction raised the history horizon (msgpack { horizon }): points at or before it may be gone (format 2)
  trim: 8, // `count` blocks from `block` read as zeros from here on (discard, F11; format 2); no data
  trimMove: 9 // trimmed versions still needed, moved by compaction: `count` runs of (block, original seq, blocks); no data (format 5)
} as const
export const LAST_ENTRY_KIND = EntryKind.trimMove

/** Most blocks one trim entry covers (a discard of more is several entries). */
export const MAX_TRIM_BLOCKS = 1 << 20

/**
 * The position the block map and the index give a trimmed version: it reads as zeros. (-1 is
 * the block map's "never written".) Log positions are >= 0, baseline ones >= BASELINE_BASE.
 */
export const TRIMMED = -2
/**
 * A trimmed version's index row has no CRC to keep; its crc field says which log entry holds
 * the version (what compaction must keep, or move before it frees): 0 its own trim entry (the
 * entry with its seq), n > 0 a trim move entry in segment n - 1.
 */
export const HELD_BY_OWN_TRIM = 0
export function trimHolder (segmentId: number): number {
  return segmentId + 1
}
export type EntryKind = typeof EntryKind[keyof typeof EntryKind]

/** Largest write entry the store builds: bounds buffers and keeps one entry per FUSE request. */
export const MAX_ENTRY_BLOCKS = 256

/**
 * Group commit (log-appender.ts): one writev carries at most WRITEV_MAX_BYTES of entries (at
 * least one entry, so one more entry may go past it), and up to WRITEVS_IN_FLIGHT writevs run
 * at once, each at its own place past the tail. Recovery needs the bound: a power loss may
 * keep a later writev whole while an earlier one is torn (recovery.ts).
 */
export const WRITEV_MAX_BYTES = 1024 * 1024
export const WRITEVS_IN_FLIGHT = 4

/**
 * The most log bytes from the start of a writev of a group commit to the end of the last one
 * in flight with it: how far past a torn entry a crash may have left whole entries. Only
 * recovery's rule for version-1 entries (older releases) uses it; version-2 entries say
 * what a flush made durable (`durableSeq`), which bounds nothing by distance.
 */
export function inFlightBytes (blockBytes: number): number {
  return WRITEVS_IN_FLIGHT * (WRITEV_MAX_BYTES + ENTRY_HEADER_BYTES + MAX_ENTRY_BLOCKS * (BLOCK_CRC_BYTES + blockBytes))
}

export const DEFAULT_BLOCK_BYTES = 4096
export const DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024

export function segmentFileName (segmentId: number): string {
  return `seg-${String(segmentId).padStart(12, '0')}.log`
}

export function parseSegmentFileName (name: string): number | undefined {
  const m = /^seg-(\d{12})\.log$/.exec(name)
  return m ? Number(m[1]) : undefined
}
