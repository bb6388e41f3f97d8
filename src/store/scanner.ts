import { crc32c } from './crc'
import { badBlocks as findBadBlocks } from './block-check'
import { blockCrcAt, decodeHeader, entryBytes, moveRecordAt, tableBytes as tableBytesOf, verifyHeader, type EntryHeader } from './entry'
import { readUpTo, type FileHandle } from './file-layer'
import { BLOCK_CRC_BYTES, ENTRY_HEADER_BYTES, EntryKind, MAX_ENTRY_BLOCKS, MAX_TRIM_BLOCKS, MAX_TRIM_MOVE_RUNS, SEGMENT_HEADER_BYTES } from './format'

const WINDOW_BYTES = 8 * 1024 * 1024
const MAX_MARKER_BYTES = 1024 * 1024

export interface ScannedEntry {
  type: 'entry'
  /** Offset of the entry in the segment file. */
  offset: number
  header: EntryHeader
  /** Header and table bytes (write entries: block i's CRC is blockCrcAt(table, i); trim moves: trimRunAt(table, i)). */
  table: Buffer
  /** Marker payload (sync, snapshot): msgpack bytes. */
  payload?: Buffer
  /** Indices of blocks whose data does not match their CRC (only when data is verified). */
  badBlocks: number[]
}

export interface ScanEnd {
  type: 'end'
  offset: number
  /** Why the scan stopped before the end of the file; undefined at a clean end. */
  torn?: string
  /**
   * The file ends inside the entry at `offset`: bytes never written, not bytes changed.
   * Damage to a written file changes bytes; only an append a crash cut short leaves this.
   */
  truncated?: boolean
}

/** Reads a file through a large window so a sequential scan costs few system calls. */
class WindowReader {
  private window = Buffer.alloc(0)
  private start = 0

  constructor (private readonly handle: FileHandle, private readonly fileBytes: number) {}

  async bytes (offset: number, length: number): Promise<Buffer | undefined> {
    if (offset + length > this.fileBytes) return undefined
    if (offset < this.start || offset + length > this.start + this.window.length) {
      const size = Math.min(Math.max(WINDOW_BYTES, length), this.fileBytes - offset)
      const buf = Buffer.allocUnsafe(size)
      const got = await readUpTo(this.handle, buf, offset)
      this.window = buf.subarray(0, got)
      this.start = offset
      if (got < length) return undefined
    }
    return this.window.subarray(offset - this.start, offset - this.start + length)
  }
}

/**
 * Walks the entries of one segment file from `offset`, checking every header CRC (and every
 * block CRC when `verifyData`). Ends with a ScanEnd that says where valid entries stop and, if
 * bytes follow that are not a valid entry, why: a torn tail (004: a crash mid-append) or damage.
 */
export async function * scanSegment (
  handle: FileHandle, offset: number, blockBytes: number, verifyData: boolean, limit?: number
): AsyncGenerator<ScannedEntry | ScanEnd> {
  const fileBytes = limit ?? await handle.size()
  const reader = new WindowReader(handle, fileBytes)
  while (true) {
    if (offset >= fileBytes) {
      yield { type: 'end', offset }
      return
    }
    const head = await reader.bytes(offset, ENTRY_HEADER_BYTES)
    const header = head && decodeHeader(head)
    const problem = !head
      ? 'truncated entry header'
      : !header
          ? 'not an entry header'
          : header.kind === EntryKind.write || header.kind === EntryKind.move
            ? (header.count < 1 || header.count > MAX_ENTRY_BLOCKS || header.payloadBytes !== header.count * blockBytes ? 'impossible write entry sizes' : undefined)
            : header.kind === EntryKind.free
              ? (header.count !== 0 || offset + ENTRY_HEADER_BYTES + header.payloadBytes > fileBytes || header.block < header.seq ? 'impossible free run' : undefined)
              : header.kind === EntryKind.trim
                ? (header.count < 1 || header.count > MAX_TRIM_BLOCKS || header.payloadBytes !== 0 ? 'impossible trim entry sizes' : undefined)
                : header.kind === EntryKind.trimMove
                  ? (header.count < 1 || header.count > MAX_TRIM_MOVE_RUNS || header.payloadBytes !== 0 ? 'impossible trim move entry sizes' : undefined)
                  : (header.count !== 0 || header.payloadBytes > MAX_MARKER_BYTES ? 'impossible marker entry sizes' : undefined)
    if (problem || !header) {
      yield { type: 'end', offset, torn: problem, ...(head ? {} : { truncated: true }) }
      return
    }
    const tableBytes = tableBytesOf(header)
    const total = entryBytes(header)
    if (header.kind === EntryKind.free || header.kind === EntryKind.trim) {
      // A free entry's payload was punched out (jump over the run); a trim has none.
      if (!verifyHeader(head!)) {
        yield { type: 'end', offset, torn: 'entry header checksum mismatch' }
        return
      }
      yield { type: 'entry', offset, header, table: Buffer.from(head!), badBlocks: [] }
      offset += total
      continue
    }
    const whole = await reader.bytes(offset, total)
    if (!whole) {
      yield { type: 'end', offset, torn: 'truncated entry', truncated: true }
      return
    }
    const table = Buffer.from(whole.subarray(0, tableBytes))
    if (!verifyHeader(table)) {
      yield { type: 'end', offset, torn: 'entry header checksum mismatch' }
      return
    }
    let badBlocks: number[] = []
    let payload: Buffer | undefined
    if (header.kind === EntryKind.write || header.kind === EntryKind.move) {
      if (verifyData) {
        const crcs = new Uint32Array(header.count)
        for (let i = 0; i < header.count; i++) crcs[i] = header.kind === EntryKind.write ? blockCrcAt(table, i) : moveRecordAt(table, i).crc
        badBlocks = findBadBlocks(whole.subarray(tableBytes, tableBytes + header.count * blockBytes), crcs, blockBytes)
      }
    } else if (header.kind !== EntryKind.trimMove) { // a trim move is its table alone
      payload = Buffer.from(whole.subarray(tableBytes))
      if (crc32c(payload) !== header.payloadCrc) {
        yield { type: 'end', offset, torn: 'marker payload checksum mismatch' }
        return
      }
    }
    yield { type: 'entry', offset, header, table, payload, badBlocks }
    offset += total
  }
}

/**
 * Whether a segment file holds free entries and nothing else: at least one, each valid,
 * back to back from the header page to the end of the file (read in the scanner's windows;
 * mostly holes in a segment a pass punched). Such a
 * segment has nothing anyone reads: what compaction recycles. An index rebuild gives the
 * entries inside free entries no summaries, so compaction, which finds a segment's entries by
 * their summaries, asks this of a segment that has none (compaction-pass.ts).
 */
export async function holdsOnlyFreeEntries (handle: FileHandle, blockBytes: number): Promise<boolean> {
  let any = false
  for await (const item of scanSegment(handle, SEGMENT_HEADER_BYTES, blockBytes, false)) {
    if (item.type === 'end') return any && item.torn === undefined
    if (item.header.kind !== EntryKind.free) return false
    any = true
  }
  return false
}

/**
 * Where the entries of a segment copy end, when every one of them, from its header on, passes
 * its checksums (a tail a crash cut short, `truncated`, is not damage in itself); undefined
 * when one fails. Of two copies that pass, the one ending earlier lacks entries the other has
 * (a copy truncated after it was sealed reads as cut short): `intactCopies` keeps the
 * longest. Reads the whole file: for commands that must choose between copies of a mirrored
 * segment (pool repair, adopt), never for a read.
 */
export async function checkedEnd (handle: FileHandle, blockBytes: number): Promise<number | undefined> {
  try {
    for await (const item of scanSegment(handle, SEGMENT_HEADER_BYTES, blockBytes, true)) {
      if (item.type === 'end') return item.torn === undefined || item.truncated === true ? item.offset : undefined
      if (item.badBlocks.length > 0) return undefined
    }
    return undefined
  } catch {
    return undefined
  }
}

/** One copy of a segment read whole (scanCopy): what verify reports of it and what pool repair heals. */
export interface CopyScan {
  /** Where its valid entries end; undefined when reading it failed (`error`). */
  end: number | undefined
  /** Why they end before the end of the file (`truncated`: the file ends inside an entry). */
  torn?: { reason: string, truncated: boolean }
  /** Each block that fails its checksum: its entry (offset, header, table, slot) and its own offset in the file. */
  bad: Array<{ offset: number, header: EntryHeader, table: Buffer, slot: number, at: number }>
  /** What stopped the read, if anything did. */
  error?: string
}

/** Reads a segment copy whole, up to `limit` when given, checking every block (verify, pool repair). */
export async function scanCopy (handle: FileHandle, blockBytes: number, limit?: number): Promise<CopyScan> {
  const out: CopyScan = { end: undefined, bad: [] }
  try {
    for await (const item of scanSegment(handle, SEGMENT_HEADER_BYTES, blockBytes, true, limit)) {
      if (item.type === 'end') {
        out.end = item.offset
        if (item.torn !== undefined) out.torn = { reason: item.torn, truncated: item.truncated === true }
        break
      }
      const dataAt = item.offset + tableBytesOf(item.header)
      for (const slot of item.badBlocks) out.bad.push({ offset: item.offset, header: item.header, table: item.table, slot, at: dataAt + slot * blockBytes })
    }
  } catch (err) {
    out.end = undefined
    out.error = (err as Error).message
  }
  return out
}

/** A scanned copy's checkedEnd: where it ends if it passes its checksums (cut short counts), else undefined. */
export function intactEnd (s: CopyScan): number | undefined {
  return s.error !== undefined || s.bad.length > 0 || (s.torn !== undefined && !s.torn.truncated) ? undefined : s.end
}

/**
 * Of copies of one segment, those that pass their checksums and end where the longest of
 * those ends: the ones to keep, in the order given. `ends` holds each copy's checkedEnd.
 */
export function intactCopies<T> (copies: T[], ends: Array<number | undefined>): T[] {
  const longest = Math.max(-1, ...ends.map(e => e ?? -1))
  return copies.filter((_, i) => ends[i] !== undefined && ends[i] === longest)
}
