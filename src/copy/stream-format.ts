import fs from 'node:fs'
import { LogdiskError, fromSystemError } from '../errors'
import { crc32c } from '../store'
import { crc32cCombine, crc32cOfBlocks } from '../store/crc-combine'

/**
 * Send/receive streams (F8; 001 "compacted remote copy"): a snapshot, or the blocks changed
 * between two snapshots, as one self-checking byte stream that can go through a pipe. The
 * layout is documented in docs/STREAM.md; any incompatible change bumps STREAM_FORMAT.
 *
 *   preamble  "LDSTREAM" (8)  u32 format  u32 zero
 *   record    u8 type  u8[3] zero  u32 payload length  payload  u32 CRC32C of type..payload
 *
 * Records: one header (JSON), then data (u64 block, u32 count, count blocks) and zero
 * (u64 block, u32 count) records in strictly increasing block order, each block at most once,
 * then one trailer (JSON: counts and the CRC32C of every byte before the trailer). Nothing may
 * follow the trailer. All integers are little-endian.
 */
export const STREAM_MAGIC = Buffer.from('LDSTREAM', 'latin1')
/**
 * The format written. 2: the identities are c2 set hashes (block-set-hash.ts), which an
 * incremental receive can carry from its base instead of walking the store. Format 1 streams
 * (c1 identities, set-identity.ts's walk of an ordered SHA-256) are still read.
 */
export const STREAM_FORMAT = 2
/** Formats this release reads, and the content identity each carries. */
export const STREAM_FORMATS_READ = [1, 2]
export function identitySchemeOf (format: number): 'c1' | 'c2' {
  return format === 1 ? 'c1' : 'c2'
}
const PREAMBLE_BYTES = 16
const RECORD_HEAD_BYTES = 8
const RECORD_CRC_BYTES = 4
const RUN_HEAD_BYTES = 12
/** Data records carry at most this many bytes of blocks (at least one block). */
const MAX_RUN_BYTES = 1024 * 1024
const MAX_JSON_BYTES = 64 * 1024

export const RecordType = { header: 1, data: 2, zero: 3, trailer: 4 } as const

export interface StreamHeader {
  format: number
  /** uuid of the store the stream was made from. */
  sourceUuid: string
  blockBytes: number
  sizeBytes: number
  /** The snapshot the stream recreates, and its content identity (contentIdentity). */
  snapshot: { name: string, identity: string, timeMs: number, frozen: boolean }
  /** Incremental streams: the base snapshot, which the receiver must hold with this identity. */
  from: { name: string, identity: string } | null
  createdAt: string
}

export interface StreamTrailer {
  /** Records before the trailer, the header included. */
  records: number
  dataBlocks: number
  zeroBlocks: number
  /** CRC32C of every stream byte before the trailer record. */
  streamCrc: number
}

/** Parts of a record shorter than this are staged and written together, up to STAGE_BYTES. */
const SMALL_PART_BYTES = 64 * 1024
const STAGE_BYTES = 1024 * 1024

/**
 * Where a stream goes: chunks are written in order; the promise resolves once accepted. A
 * chunk may be a view of a buffer the writer reuses once the promise resolves: a sink that
 * keeps it longer (a socket's queue) copies it.
 */
export interface StreamSink {
  write (chunk: Buffer): Promise<void>
}

export function maxRunBlocks (blockBytes: number): number {
  return Math.max(1, Math.floor(MAX_RUN_BYTES / blockBytes))
}

/** The bytes of the largest data record of a stream of `blockBytes` blocks, head and CRC included. */
export function maxRecordBytes (blockBytes: number): number {
  return RECORD_HEAD_BYTES + RUN_HEAD_BYTES + maxRunBlocks(blockBytes) * blockBytes + RECORD_CRC_BYTES
}

/** A record's bytes (head, payload, CRC), the CRC32C of head and payload, and their length. */
interface EncodedRecord { parts: Buffer[], crc: number, bytes: number }

/** `payloadCrcs[k]`, where given, is the CRC32C of `payload[k]`, composed instead of computed. */
function record (type: number, payload: Buffer[], payloadCrcs: Array<number | undefined> = []): EncodedRecord {
  const length = payload.reduce((n, p) => n + p.length, 0)
  const head = Buffer.alloc(RECORD_HEAD_BYTES)
  head.writeUInt8(type, 0)
  head.writeUInt32LE(length, 4)
  let crc = crc32c(head)
  payload.forEach((p, k) => {
    const known = payloadCrcs[k]
    crc = known === undefined ? crc32c(p, crc) : crc32cCombine(crc, known, p.length)
  })
  const tail = Buffer.alloc(RECORD_CRC_BYTES)
  tail.writeUInt32LE(crc, 0)
  return { parts: [head, ...payload, tail], crc, bytes: RECORD_HEAD_BYTES + length }
}

function runHead (block: number, count: number): Buffer {
  const b = Buffer.alloc(RUN_HEAD_BYTES)
  b.writeBigUInt64LE(BigInt(block), 0)
  b.writeUInt32LE(count, 8)
  return b
}

/** Builds a stream record by record onto a sink, keeping the counts and CRC of the trailer. */
export class StreamWriter {
  private records = 0
  private dataBlocks = 0
  private zeroBlocks = 0
  private crc = 0
  private readonly stage = Buffer.allocUnsafe(STAGE_BYTES)
  private staged = 0
  bytes = 0

  constructor (private readonly sink: StreamSink) {}

  /**
   * Writes a record (or the preamble: a bare buffer), adding it to the stream's CRC unless it
   * is the trailer. A record's CRC is composed from the one it carries (the bytes are not read
   * again), then its own four CRC bytes are added.
   */
  private async put (what: EncodedRecord | Buffer, counted = true): Promise<void> {
    const parts = Buffer.isBuffer(what) ? [what] : what.parts
    if (counted) {
      if (Buffer.isBuffer(what)) this.crc = crc32c(what, this.crc)
      else this.crc = crc32c(parts[parts.length - 1], crc32cCombine(this.crc, what.crc, what.bytes))
    }
    for (const p of parts) this.bytes += p.length
    // Small parts (record heads, CRCs, records of a few blocks) are copied into one staging
    // buffer that goes out when full (or before a large part, or at the trailer): an
    // incremental of scattered blocks is then a few large writes, not one per record. A large
    // data payload goes out as it is: no copy of each MiB (its page faults cost more than the
    // write).
    for (const p of parts) {
      if (p.length < SMALL_PART_BYTES) {
        if (this.staged + p.length > this.stage.length) await this.flush()
        p.copy(this.stage, this.staged)
        this.staged += p.length
        continue
      }
      await this.flush()
      await this.sink.write(p)
    }
  }

  /** Writes what is staged (the sink is done with the buffer once the promise resolves). */
  private async flush (): Promise<void> {
    if (this.staged === 0) return
    const n = this.staged
    this.staged = 0
    await this.sink.write(this.stage.subarray(0, n))
  }

  async header (h: StreamHeader): Promise<void> {
    const pre = Buffer.alloc(PREAMBLE_BYTES)
    STREAM_MAGIC.copy(pre, 0)
    pre.writeUInt32LE(STREAM_FORMAT, 8)
    await this.put(pre)
    this.records++
    await this.put(record(RecordType.header, [Buffer.from(JSON.stringify(h))]))
  }

  /** `dataCrc`, if known (the blocks' checked CRCs composed), spares a pass over `data`. */
  async data (block: number, data: Buffer, blockBytes: number, dataCrc?: number): Promise<void> {
    const count = data.length / blockBytes
    this.records++
    this.dataBlocks += count
    await this.put(record(RecordType.data, [runHead(block, count), data], [undefined, dataCrc]))
  }

  async zero (block: number, count: number): Promise<void> {
    this.records++
    this.zeroBlocks += count
    await this.put(record(RecordType.zero, [runHead(block, count)]))
  }

  async trailer (): Promise<StreamTrailer> {
    const t: StreamTrailer = { records: this.records, dataBlocks: this.dataBlocks, zeroBlocks: this.zeroBlocks, streamCrc: this.crc }
    await this.put(record(RecordType.trailer, [Buffer.from(JSON.stringify(t))]), false)
    await this.flush()
    return t
  }
}

/** Bytes a stream file is read in at a time (at least). */
const READ_BYTES = 4 * 1024 * 1024
/** The largest record: a data record of MAX_RUN_BYTES (what a read may carry over to the next buffer). */
const MAX_RECORD_BYTES = RECORD_HEAD_BYTES + RUN_HEAD_BYTES + MAX_RUN_BYTES + RECORD_CRC_BYTES

/**
 * Reads exact byte counts from a file, in large chunks. What it returns are views of its
 * buffers. Without `heldBytes` every chunk is a new buffer, never written again, so a view
 * stays valid for good. With `heldBytes` the buffers are reused in turn: a view stays valid
 * until at least `heldBytes` more bytes have been read, which is all a consumer that never
 * holds more than that may rely on. Reused buffers spare a page fault per 4 KiB of the stream
 * (new memory costs about 10 ms per MiB on the bench VM: more than reading the bytes).
 */
class FileReader {
  private buf: Buffer = Buffer.alloc(0)
  private at = 0
  /** Stream offset of buf[at]. */
  offset = 0
  private filePos = 0
  private eof = false
  private readonly ring: Buffer[] = []
  private readonly ringSize: number
  private turn = 0

  constructor (private readonly fh: fs.promises.FileHandle, heldBytes?: number) {
    // A buffer comes round again after ringSize - 1 others were filled, each with at least
    // READ_BYTES - MAX_RECORD_BYTES new bytes (the rest carried over is less than a record).
    this.ringSize = heldBytes === undefined ? 0 : 2 + Math.ceil(heldBytes / (READ_BYTES - MAX_RECORD_BYTES))
  }

  private nextBuffer (n: number): Buffer {
    if (this.ringSize === 0 || n > READ_BYTES) return Buffer.allocUnsafe(Math.max(READ_BYTES, n))
    const k = this.turn++ % this.ringSize
    return (this.ring[k] ??= Buffer.allocUnsafe(READ_BYTES))
  }

  /** Exactly n bytes, or fewer only at the end of the file. */
  async read (n: number): Promise<Buffer> {
    if (this.buf.length - this.at < n && !this.eof) {
      // The next buffer starts with what is left of this one (less than a record) and is read
      // into after it: the file's bytes are copied once, not again by a concatenation.
      const rest = this.buf.subarray(this.at)
      const next = this.nextBuffer(n)
      rest.copy(next, 0)
      let have = rest.length
      while (have < n && !this.eof) {
        const { bytesRead } = await this.fh.read(next, have, next.length - have, this.filePos)
        if (bytesRead === 0) this.eof = true
        this.filePos += bytesRead
        have += bytesRead
      }
      this.buf = next.subarray(0, have)
      this.at = 0
    }
    const out = this.buf.subarray(this.at, Math.min(this.at + n, this.buf.length))
    this.at += out.length
    this.offset += out.length
    return out
  }
}

export type StreamRecord =
  | { type: 'data', block: number, count: number, data: Buffer, crcs?: Uint32Array }
  | { type: 'zero', block: number, count: number }

/**
 * Parses a stream file and checks all of it: preamble, every record's CRC, lengths, block
 * order and bounds, the trailer's counts and CRC, nothing after the trailer. Yields the header
 * first, then each block record, then the trailer; throws CORRUPT at the first fault, before
 * yielding the faulty record.
 *
 * With `blockCrcs`, each data record comes with the CRC32C of each of its blocks (`crcs`),
 * which a store writing the blocks needs anyway: the record's CRC is then composed from them
 * instead of computed. Either way each byte is read by the CRC once; the stream's CRC is
 * composed from the records'.
 *
 * A record's `data` is a view of the reader's buffer. By default it stays valid for good; a
 * consumer that holds at most `heldBytes` of the stream at a time (records not yet done with)
 * says so, and buffers are then reused (FileReader).
 */
export async function * readStream (file: string, opts: { blockCrcs?: boolean, heldBytes?: number } = {}): AsyncGenerator<{ header: StreamHeader } | StreamRecord | { trailer: StreamTrailer }> {
  let fh: fs.promises.FileHandle
  try {
    fh = await fs.promises.open(file, 'r')
  } catch (err) {
    throw fromSystemError(err, `open ${file}`)
  }
  try {
    const r = new FileReader(fh, opts.heldBytes)
    const bad = (what: string): LogdiskError => new LogdiskError('CORRUPT', `the stream is corrupt: ${what}`)
    const truncated = (what: string): LogdiskError => new LogdiskError('CORRUPT', `the stream is truncated after ${r.offset} bytes: it ends ${what}`)
    const pre = await r.read(PREAMBLE_BYTES)
    if (pre.length === 0) throw truncated('before its start')
    if (!pre.subarray(0, Math.min(8, pre.length)).equals(STREAM_MAGIC.subarray(0, Math.min(8, pre.length)))) throw bad('it does not start with LDSTREAM (not a logdisk send stream)')
    if (pre.length < PREAMBLE_BYTES) throw truncated('inside its preamble')
    const format = pre.readUInt32LE(8)
    if (pre.readUInt32LE(12) !== 0) throw bad('its preamble has non-zero reserved bytes')
    if (!STREAM_FORMATS_READ.includes(format)) {
      // The preamble has no checksum of its own: a header record that checks and names a format
      // this logdisk reads says the preamble was damaged, not written by a newer logdisk (a
      // flipped byte read as "format 16386 ... receive it with a newer logdisk": helper-77).
      const named = await headerFormat(r)
      if (named !== undefined && STREAM_FORMATS_READ.includes(named)) throw bad(`its preamble says format ${format}, but its header record (which checks) says format ${named}: the preamble is damaged`)
      throw new LogdiskError('BAD_ARGUMENT', `the stream has format ${format}; this logdisk reads formats ${STREAM_FORMATS_READ.join(' and ')}: receive it with a newer logdisk`)
    }
    let crc = crc32c(pre)
    let records = 0
    let dataBlocks = 0
    let zeroBlocks = 0
    let header: StreamHeader | undefined
    let nextBlock = 0
    while (true) {
      const at = r.offset
      const where = `record ${records + 1} (at byte ${at})`
      const head = await r.read(RECORD_HEAD_BYTES)
      if (head.length === 0) throw truncated('before its trailer')
      if (head.length < RECORD_HEAD_BYTES) throw truncated(`inside ${where}`)
      const type = head.readUInt8(0)
      const length = head.readUInt32LE(4)
      const limit = type === RecordType.data && header ? RUN_HEAD_BYTES + maxRunBlocks(header.blockBytes) * header.blockBytes : type === RecordType.zero ? RUN_HEAD_BYTES : MAX_JSON_BYTES
      if (head.readUIntLE(1, 3) !== 0 || type < RecordType.header || type > RecordType.trailer || length > limit) {
        throw bad(`${where} has a bad record header (type ${type}, length ${length})`)
      }
      const payload = await r.read(length)
      if (payload.length < length) throw truncated(`inside ${where}`)
      const tail = await r.read(RECORD_CRC_BYTES)
      if (tail.length < RECORD_CRC_BYTES) throw truncated(`inside ${where}`)
      let blockCrcs: Uint32Array | undefined
      let recordCrc: number
      const dataBytes = length - RUN_HEAD_BYTES
      if (opts.blockCrcs === true && type === RecordType.data && header && dataBytes > 0 && dataBytes % header.blockBytes === 0) {
        const B = header.blockBytes
        blockCrcs = new Uint32Array(dataBytes / B)
        for (let i = 0; i < blockCrcs.length; i++) blockCrcs[i] = crc32c(payload.subarray(RUN_HEAD_BYTES + i * B, RUN_HEAD_BYTES + (i + 1) * B))
        recordCrc = crc32cCombine(crc32c(payload.subarray(0, RUN_HEAD_BYTES), crc32c(head)), crc32cOfBlocks(blockCrcs, B), dataBytes)
      } else {
        recordCrc = crc32c(payload, crc32c(head))
      }
      if (recordCrc !== tail.readUInt32LE(0)) throw bad(`${where} fails its checksum`)
      const json = (): Record<string, unknown> => {
        try {
          const v = JSON.parse(payload.toString('utf8'))
          if (v && typeof v === 'object') return v
        } catch { /* below */ }
        throw bad(`${where} is not valid JSON`)
      }
      if (type === RecordType.trailer) {
        if (!header) throw bad('the trailer comes before the header')
        const t = json() as unknown as StreamTrailer
        if (t.records !== records || t.dataBlocks !== dataBlocks || t.zeroBlocks !== zeroBlocks) {
          throw bad(`the trailer counts ${t.records} records, ${t.dataBlocks} data and ${t.zeroBlocks} zero blocks but the stream holds ${records}, ${dataBlocks} and ${zeroBlocks}`)
        }
        if (t.streamCrc !== crc) throw bad('the trailer\'s checksum of the whole stream does not match')
        if ((await r.read(1)).length !== 0) throw bad(`bytes follow the trailer at byte ${r.offset - 1}`)
        yield { trailer: t }
        return
      }
      crc = crc32c(tail, crc32cCombine(crc, recordCrc, RECORD_HEAD_BYTES + length))
      records++
      if (type === RecordType.header) {
        if (header) throw bad(`${where} is a second header`)
        header = checkHeader(json(), format, bad)
        yield { header }
        continue
      }
      if (!header) throw bad(`${where} comes before the header`)
      if (length < RUN_HEAD_BYTES) throw bad(`${where} is too short`)
      const block = Number(payload.readBigUInt64LE(0))
      const count = payload.readUInt32LE(8)
      const B = header.blockBytes
      if (count < 1 || count > maxRunBlocks(B) || (type === RecordType.data && length !== RUN_HEAD_BYTES + count * B)) {
        throw bad(`${where} has a bad block count ${count}`)
      }
      if (block < nextBlock || block + count > header.sizeBytes / B) {
        throw bad(`${where} holds blocks ${block}-${block + count - 1}, out of order or past the end of the volume`)
      }
      nextBlock = block + count
      if (type === RecordType.data) {
        dataBlocks += count
        yield { type: 'data', block, count, data: payload.subarray(RUN_HEAD_BYTES), crcs: blockCrcs }
      } else {
        if (!header.from) throw bad(`${where} is a zero record in a full stream`)
        zeroBlocks += count
        yield { type: 'zero', block, count }
      }
    }
  } finally {
    await fh.close()
  }
}

/** The `format` of the header record at the reader's position, if it is a header record that checks (else undefined). */
async function headerFormat (r: FileReader): Promise<number | undefined> {
  const head = await r.read(RECORD_HEAD_BYTES)
  if (head.length < RECORD_HEAD_BYTES || head.readUInt8(0) !== RecordType.header || head.readUIntLE(1, 3) !== 0) return undefined
  const length = head.readUInt32LE(4)
  if (length > MAX_JSON_BYTES) return undefined
  const payload = await r.read(length)
  const tail = await r.read(RECORD_CRC_BYTES)
  if (payload.length < length || tail.length < RECORD_CRC_BYTES || crc32c(payload, crc32c(head)) !== tail.readUInt32LE(0)) return undefined
  try {
    const v = JSON.parse(payload.toString('utf8')) as { format?: unknown }
    return typeof v?.format === 'number' ? v.format : undefined
  } catch {
    return undefined
  }
}

function checkHeader (v: Record<string, unknown>, format: number, bad: (what: string) => LogdiskError): StreamHeader {
  const h = v as unknown as StreamHeader
  const name = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/
  const okSnap = (s: unknown, full: boolean): boolean => {
    const o = s as Record<string, unknown>
    return !!o && typeof o === 'object' && typeof o.name === 'string' && name.test(o.name) && typeof o.identity === 'string' &&
      o.identity.startsWith(`${identitySchemeOf(format)}-`) &&
      (!full || (typeof o.timeMs === 'number' && typeof o.frozen === 'boolean'))
  }
  if (h.format !== format || typeof h.sourceUuid !== 'string' ||
    !Number.isSafeInteger(h.blockBytes) || h.blockBytes < 512 || h.blockBytes > 1024 * 1024 || (h.blockBytes & (h.blockBytes - 1)) !== 0 ||
    !Number.isSafeInteger(h.sizeBytes) || h.sizeBytes <= 0 || h.sizeBytes % h.blockBytes !== 0 ||
    !okSnap(h.snapshot, true) || (h.from !== null && !okSnap(h.from, false))) {
    throw bad('its header is missing fields or has bad values')
  }
  return h
}

export interface StreamSummary {
  header: StreamHeader
  trailer: StreamTrailer
  /** Blocks the stream sets, merged into [first, count] ranges in block order. */
  ranges: Array<[number, number]>
  /**
   * The block records as checked (data records with their blocks' CRCs), when asked for with
   * `keepBytes` and the file is no larger: applying them needs no second read of the file.
   */
  records?: StreamRecord[]
}

/**
 * Reads a whole stream file and checks it (readStream) without applying anything. With
 * `keepBytes`, a file of at most that many bytes is read into memory once and its block
 * records are returned checked (`records`, each data record with its blocks' CRCs, as
 * readStream's `blockCrcs` gives them), so that a receive of a small increment applies what
 * it checked instead of reading and checking the file a second time.
 */
export async function validateStream (file: string, onProgress?: (done: number) => void, opts: { keepBytes?: number, onRecord?: (r: StreamRecord) => void } = {}): Promise<StreamSummary> {
  let header: StreamHeader | undefined
  const ranges: Array<[number, number]> = []
  let records: StreamRecord[] | undefined
  if (opts.keepBytes !== undefined) {
    const size = fs.statSync(file, { throwIfNoEntry: false })?.size
    if (size !== undefined && size <= opts.keepBytes) records = []
  }
  // Each record is done with before the next is read, so nothing is held, unless the records
  // are kept: then every buffer is a new one (a view of it stays valid).
  for await (const r of readStream(file, records ? { blockCrcs: true } : { heldBytes: 0, blockCrcs: opts.onRecord !== undefined })) {
    if ('header' in r) header = r.header
    else if ('trailer' in r) return { header: header!, trailer: r.trailer, ranges, ...(records ? { records } : {}) }
    else {
      records?.push(r)
      opts.onRecord?.(r)
      const last = ranges[ranges.length - 1]
      if (last && last[0] + last[1] === r.block) last[1] += r.count
      else ranges.push([r.block, r.count])
      onProgress?.((r.block + r.count) * header!.blockBytes)
    }
  }
  throw new LogdiskError('CORRUPT', 'the stream is truncated: it ends before its trailer')
}

/** Reads only the header of a stream file (to see what it is before checking all of it). */
export async function readStreamHeader (file: string): Promise<StreamHeader> {
  for await (const r of readStream(file)) {
    if ('header' in r) return r.header
  }
  throw new LogdiskError('CORRUPT', 'the stream has no header')
}
