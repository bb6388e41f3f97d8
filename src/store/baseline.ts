import path from 'node:path'
import { LogdiskError } from '../errors'
import { crcTrailerOk, sealCrcTrailer } from './crc'
import { publishFile, readUpTo, type FileHandle, type FileLayer } from './file-layer'

/**
 * The baseline (000 cl. 1, 8): a block-ordered image of everything older than the oldest
 * kept snapshot, so the log no longer has to hold it. baseline.img keeps block b at offset
 * b * blockBytes (sparse); baseline.idx says which blocks it holds, with each one's original
 * sequence number and CRC, so the store can be rebuilt without the index:
 *
 *   "LDBASE1\n" (8)  u32 version  u32 count  f64 cut seq  16 bytes store uuid
 *   count x { f64 block, f64 seq, u32 crc }   u32 CRC32C of everything before it
 *
 * The index points at baseline blocks with positions from BASELINE_BASE up, beyond any log
 * position, so one number still says where every version is.
 */
export const BASELINE_BASE = 2 ** 52
export const BASELINE_DIR = 'baseline'
const MAGIC = 'LDBASE1\n'
const RECORD = 20

export interface BaselineIndex {
  cutSeq: number
  blocks: Array<{ block: number, seq: number, crc: number }>
}

export function baselineFiles (storeDir: string): { image: string, index: string, dir: string } {
  const dir = path.join(storeDir, BASELINE_DIR)
  return { dir, image: path.join(dir, 'baseline.img'), index: path.join(dir, 'baseline.idx') }
}

export function encodeBaselineIndex (uuid: string, idx: BaselineIndex): Buffer {
  const buf = Buffer.alloc(40 + idx.blocks.length * RECORD + 4)
  buf.write(MAGIC, 0, 'latin1')
  buf.writeUInt32LE(1, 8)
  buf.writeUInt32LE(idx.blocks.length, 12)
  buf.writeDoubleLE(idx.cutSeq, 16)
  Buffer.from(uuid.replace(/-/g, ''), 'hex').copy(buf, 24)
  idx.blocks.forEach((b, i) => {
    const at = 40 + i * RECORD
    buf.writeDoubleLE(b.block, at)
    buf.writeDoubleLE(b.seq, at + 8)
    buf.writeUInt32LE(b.crc, at + 16)
  })
  sealCrcTrailer(buf)
  return buf
}

export function decodeBaselineIndex (uuid: string, buf: Buffer, file: string): BaselineIndex {
  const bad = (why: string): never => { throw new LogdiskError('CORRUPT', `baseline index ${file}: ${why}`) }
  if (buf.length < 44 || buf.toString('latin1', 0, 8) !== MAGIC) bad('not a logdisk baseline index')
  if (!crcTrailerOk(buf)) bad('checksum mismatch')
  if (buf.readUInt32LE(8) !== 1) bad(`unknown version ${buf.readUInt32LE(8)}`)
  if (!buf.subarray(24, 40).equals(Buffer.from(uuid.replace(/-/g, ''), 'hex'))) bad('belongs to another store')
  const count = buf.readUInt32LE(12)
  if (buf.length !== 44 + count * RECORD) bad('wrong length')
  const blocks = []
  for (let i = 0; i < count; i++) {
    const at = 40 + i * RECORD
    blocks.push({ block: buf.readDoubleLE(at), seq: buf.readDoubleLE(at + 8), crc: buf.readUInt32LE(at + 16) })
  }
  return { cutSeq: buf.readDoubleLE(16), blocks }
}

/** Reads baseline.idx, or undefined when the store has no baseline. */
export async function readBaselineIndex (layer: FileLayer, storeDir: string, uuid: string): Promise<BaselineIndex | undefined> {
  const { index } = baselineFiles(storeDir)
  let handle: FileHandle
  try {
    handle = await layer.open(index, false)
  } catch {
    return undefined
  }
  try {
    const size = await handle.size()
    const buf = Buffer.alloc(size)
    const got = await readUpTo(handle, buf, 0)
    return decodeBaselineIndex(uuid, buf.subarray(0, got), index)
  } finally {
    await handle.close()
  }
}

/** Publishes a new baseline.idx atomically (temporary file, fsync, rename, fsync dir). */
export async function writeBaselineIndex (layer: FileLayer, storeDir: string, uuid: string, idx: BaselineIndex): Promise<void> {
  const { index, dir } = baselineFiles(storeDir)
  await publishFile(layer, index, dir, encodeBaselineIndex(uuid, idx))
}
