import crypto from 'node:crypto'
import { LogdiskError } from '../errors'
import { crc32c } from '../store/crc'
import { ArchiveCodec, archiveCorrupt, compressWith, decompressWith } from './compress'

/**
 * The framed archive format, LDARCH2 (docs/FORMAT.md): the original bytes cut into frames of
 * FRAME_BYTES, each compressed on its own, with a table of where each frame is and the CRC32C
 * of its original bytes, so that a range of the original can be read by fetching the header
 * and only the frames that cover it (a cold read of one block of a segment left on a replica).
 * The whole-object sha256 is still checked by a whole decode. Little-endian:
 *
 *   offset      size  field
 *        0         8  magic "LDARCH2\n"
 *        8         1  codec id (as LDARCH1: 1 gzip, 2 brotli)
 *        9         4  frame bytes (u32): every frame's original length, the last one's at most
 *       13         8  original length (u64)
 *       21         4  frame count n (u32)
 *       25        32  sha256 of the original bytes
 *       57    16 x n  per frame: compressed offset from the body's start (u64), compressed
 *                     length (u32), CRC32C of the frame's original bytes (u32)
 *   57+16n         4  CRC32C of every header byte before it
 *   61+16n         .  the frames' compressed bytes, in order, nothing between or after them
 */
export const FRAMED_MAGIC = 'LDARCH2\n'
export const FRAME_BYTES = 1 << 20
const FIXED = 57
const ENTRY = 16

export interface FramedHeader {
  codec: ArchiveCodec
  frameBytes: number
  originalBytes: number
  sha256: Buffer
  frames: Array<{ offset: number, length: number, crc: number }>
  /** Where the body starts: the header's length. */
  headerBytes: number
}


export function isFramed (buf: Buffer): boolean {
  return buf.length >= 8 && buf.toString('latin1', 0, 8) === FRAMED_MAGIC
}

/** The header's length, from its first FIXED bytes. */
export function framedHeaderBytes (head: Buffer): number {
  if (head.length < FIXED || !isFramed(head)) throw archiveCorrupt('not a framed (LDARCH2) archive, or truncated before its header')
  return FIXED + head.readUInt32LE(21) * ENTRY + 4
}

export async function encodeFramed (data: Buffer, codec: ArchiveCodec = ArchiveCodec.brotli, frameBytes = FRAME_BYTES): Promise<Buffer> {
  const n = Math.ceil(data.length / frameBytes)
  const bodies: Buffer[] = []
  const header = Buffer.alloc(FIXED + n * ENTRY + 4)
  header.write(FRAMED_MAGIC, 0, 'latin1')
  header.writeUInt8(codec, 8)
  header.writeUInt32LE(frameBytes, 9)
  header.writeBigUInt64LE(BigInt(data.length), 13)
  header.writeUInt32LE(n, 21)
  crypto.createHash('sha256').update(data).digest().copy(header, 25)
  let at = 0
  for (let i = 0; i < n; i++) {
    const frame = data.subarray(i * frameBytes, Math.min(data.length, (i + 1) * frameBytes))
    const body = await compressWith(codec, frame)
    header.writeBigUInt64LE(BigInt(at), FIXED + i * ENTRY)
    header.writeUInt32LE(body.length, FIXED + i * ENTRY + 8)
    header.writeUInt32LE(crc32c(frame), FIXED + i * ENTRY + 12)
    bodies.push(body)
    at += body.length
  }
  header.writeUInt32LE(crc32c(header.subarray(0, header.length - 4)), header.length - 4)
  return Buffer.concat([header, ...bodies])
}

/** Reads and checks a framed header (`buf` holds at least the whole header). */
export function readFramedHeader (buf: Buffer): FramedHeader {
  const headerBytes = framedHeaderBytes(buf)
  if (buf.length < headerBytes) throw archiveCorrupt(`truncated: ${buf.length} bytes, shorter than the ${headerBytes}-byte header`)
  const stored = buf.readUInt32LE(headerBytes - 4)
  if (stored !== crc32c(buf.subarray(0, headerBytes - 4))) throw archiveCorrupt('framed header checksum mismatch: the header is damaged')
  const codec = buf.readUInt8(8) as ArchiveCodec
  if (codec !== ArchiveCodec.gzip && codec !== ArchiveCodec.brotli) throw archiveCorrupt(`unknown codec ${codec} (this logdisk reads 1 gzip, 2 brotli): written by a newer logdisk?`)
  const frameBytes = buf.readUInt32LE(9)
  const originalBytes = Number(buf.readBigUInt64LE(13))
  const n = buf.readUInt32LE(21)
  if (frameBytes === 0 || Math.ceil(originalBytes / frameBytes) !== n) throw archiveCorrupt(`${n} frames of ${frameBytes} bytes cannot hold ${originalBytes} bytes`)
  const frames: FramedHeader['frames'] = []
  let expect = 0
  for (let i = 0; i < n; i++) {
    const offset = Number(buf.readBigUInt64LE(FIXED + i * ENTRY))
    if (offset !== expect) throw archiveCorrupt(`frame ${i} starts at ${offset}, not right after the one before (${expect})`)
    const length = buf.readUInt32LE(FIXED + i * ENTRY + 8)
    frames.push({ offset, length, crc: buf.readUInt32LE(FIXED + i * ENTRY + 12) })
    expect += length
  }
  return { codec, frameBytes, originalBytes, sha256: Buffer.from(buf.subarray(25, 57)), frames, headerBytes }
}

async function decodeFrame (h: FramedHeader, i: number, body: Buffer): Promise<Buffer> {
  const want = Math.min(h.frameBytes, h.originalBytes - i * h.frameBytes)
  const data = await decompressWith(h.codec, body, want)
  if (data.length !== want || crc32c(data) !== h.frames[i].crc) throw archiveCorrupt(`frame ${i} decompresses to other bytes than were archived (length ${data.length} of ${want}, or CRC32C mismatch)`)
  return data
}

/** The whole original bytes of a framed archive, every frame and the sha256 checked. */
export async function decodeFramed (buf: Buffer): Promise<Buffer> {
  const h = readFramedHeader(buf)
  const body = buf.subarray(h.headerBytes)
  const total = h.frames.reduce((n, f) => n + f.length, 0)
  if (body.length !== total) throw archiveCorrupt(`the frames take ${total} bytes, ${body.length} are present`)
  const out: Buffer[] = []
  for (const [i, f] of h.frames.entries()) out.push(await decodeFrame(h, i, body.subarray(f.offset, f.offset + f.length)))
  const data = Buffer.concat(out)
  const sha = crypto.createHash('sha256').update(data).digest()
  if (!sha.equals(h.sha256)) throw archiveCorrupt('content checksum mismatch (sha256 of the decoded frames)')
  return data
}

/** Decoded frames kept between range reads (ranged-read.ts keeps a few), by frame index. */
export interface FrameCache {
  get (frame: number): Buffer | undefined
  set (frame: number, data: Buffer): void
}

/**
 * Bytes [offset, offset + length) of the original (cut at its end), fetching through
 * `readAt` (a ranged get of the object) the body of only the frames that cover them and that
 * `cache` does not hold, in one read, given the object's header (`readFramedHeader`). Each
 * fetched frame's CRC32C is checked (CORRUPT).
 */
export async function decodeFramedRange (h: FramedHeader, readAt: (offset: number, length: number) => Promise<Buffer>, offset: number, length: number, cache?: FrameCache): Promise<Buffer> {
  const end = Math.min(h.originalBytes, offset + length)
  if (offset >= end) return Buffer.alloc(0)
  const first = Math.floor(offset / h.frameBytes)
  const last = Math.floor((end - 1) / h.frameBytes)
  const frames: Buffer[] = []
  for (let i = first; i <= last; i++) {
    const known = cache?.get(i)
    if (known) { frames.push(known); continue }
    // The run of frames from i that the cache lacks, fetched together.
    let j = i
    while (j < last && cache?.get(j + 1) === undefined) j++
    const from = h.frames[i].offset
    const to = h.frames[j].offset + h.frames[j].length
    const body = await readAt(h.headerBytes + from, to - from)
    if (body.length !== to - from) throw archiveCorrupt(`frames ${i}-${j}: ${body.length} bytes read, ${to - from} expected`)
    for (let k = i; k <= j; k++) {
      const data = await decodeFrame(h, k, body.subarray(h.frames[k].offset - from, h.frames[k].offset - from + h.frames[k].length))
      cache?.set(k, data)
      frames.push(data)
    }
    i = j
  }
  const data = frames.length === 1 ? frames[0] : Buffer.concat(frames)
  return data.subarray(offset - first * h.frameBytes, end - first * h.frameBytes)
}
