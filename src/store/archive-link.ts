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
}
