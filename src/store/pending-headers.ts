import path from 'node:path'
import { pack, unpack } from 'msgpackr'
import { crcTrailerOk, sealCrcTrailer } from './crc'
import { publishFile, readUpTo, type FileHandle, type FileLayer } from './file-layer'
import type { PendingHeaders } from './index-db'

/**
 * In-place header writes in flight (compaction's free headers, written over the first header
 * of a run of dead entries in a sealed segment), recorded durably before they are made and
 * redone whole on open, so a header a power loss tore is rewritten (recovery.ts).
 *
 * They used to be recorded in the index alone (keys.ts 'p'). The index is a cache of the log:
 * when it is lost too, a full rebuild scanned the torn header, took it for damage and read
 * nothing more of that segment, so every entry after it was lost, live ones included
 * (simulation seed 12353033, power loss then the index deleted: a trim acknowledged before it
 * was lost and the block read its older version from the baseline). The record is now also
 * this file beside the index, `<store>/pending-headers`, which a rebuild reads too. (The
 * index keeps its record: that synced write also makes the pass's fence checkpoint durable,
 * so a crash while the headers are written does not make the next open rebuild the index.)
 *
 * Layout: magic `LDPEND1\n`, u32 LE length of the msgpack body, the body ({ segment,
 * volumes, headers: [[offset, bytes]] }), u32 LE CRC32C of everything before it. Published
 * atomically (temporary file, fsync, rename, fsync of the store directory); removed once the
 * headers are durable (not synced: redoing them is harmless until the next record replaces it).
 */
export const PENDING_HEADERS_FILE = 'pending-headers'
const MAGIC = Buffer.from('LDPEND1\n')

const fileOf = (storeDir: string): string => path.join(storeDir, PENDING_HEADERS_FILE)

export async function writePendingHeaders (layer: FileLayer, storeDir: string, pending: PendingHeaders): Promise<void> {
  const body = pack(pending)
  const buf = Buffer.alloc(MAGIC.length + 4 + body.length + 4)
  MAGIC.copy(buf, 0)
  buf.writeUInt32LE(body.length, MAGIC.length)
  body.copy(buf, MAGIC.length + 4)
  sealCrcTrailer(buf)
  await publishFile(layer, fileOf(storeDir), storeDir, buf)
}

/**
 * The pending header writes, or undefined when there are none. A file that does not check out
 * cannot be one this code published whole (rename is atomic): it is ignored, as no record.
 */
export async function readPendingHeaders (layer: FileLayer, storeDir: string): Promise<PendingHeaders | undefined> {
  let handle: FileHandle
  try {
    handle = await layer.open(fileOf(storeDir), false)
  } catch {
    return undefined
  }
  let buf: Buffer
  try {
    buf = Buffer.alloc(await handle.size())
    buf = buf.subarray(0, await readUpTo(handle, buf, 0))
  } finally {
    await handle.close()
  }
  if (buf.length < MAGIC.length + 8 || !buf.subarray(0, MAGIC.length).equals(MAGIC)) return undefined
  const length = buf.readUInt32LE(MAGIC.length)
  if (buf.length !== MAGIC.length + 4 + length + 4 || !crcTrailerOk(buf)) return undefined
  const pending = unpack(buf.subarray(MAGIC.length + 4, MAGIC.length + 4 + length)) as PendingHeaders
  return { segment: pending.segment, volumes: pending.volumes, headers: pending.headers.map(([offset, bytes]) => [offset, Buffer.from(bytes)]) }
}

/** The header writes are done and durable. */
export async function clearPendingHeaders (layer: FileLayer, storeDir: string): Promise<void> {
  await layer.remove(fileOf(storeDir))
}
