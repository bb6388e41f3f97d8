/**
 * How the store reaches its backing storage (004 cl. 14-18), without knowing what it is: the
 * archive layer (src/archive) implements this over a directory or an S3 bucket. Contract:
 * `put` resolves only once the segment is stored completely and verified; `get` returns the
 * segment's bytes exactly as they were put, or throws (NOT_FOUND, CORRUPT, IO).
 */
export interface ArchiveLink {
  put (segmentId: number, data: Buffer): Promise<void>
  get (segmentId: number): Promise<Buffer>
  /**
   * Bytes [offset, offset + length) of segment `segmentId` without fetching it whole (a cold
   * read), or undefined when the backing storage cannot (the caller fetches the segment).
   * Optional.
   */
  getRange? (segmentId: number, offset: number, length: number): Promise<Buffer | undefined>
  /** Segment ids the backing storage holds for this store. */
  list (): Promise<number[]>
  describe (): string
  /**
   * Only read: segments can be fetched from it, none put (a store recovered lazily from a
   * replica, with no archive target of its own). Such a link keeps no history: see keepsHistory.
   */
  readOnly?: boolean
}

/**
 * Whether the store's backing storage keeps its history: every segment archived before
 * anything in it is freed, so every point stays restorable and no version leaves the index.
 * A link that is only read (readOnly) does not: the store then keeps history as one without
 * backing storage does (history.keep). Taken for one that does, compaction had to archive a
 * segment written after a lazy recovery and failed on every one (a hostile test, helper-51).
 */
export function keepsHistory (link: ArchiveLink | undefined): boolean {
  return link !== undefined && link.readOnly !== true
}
