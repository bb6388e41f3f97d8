import path from 'node:path'
import { LogdiskError } from '../errors'
import { baselineFiles } from './baseline'
import { crcTrailerOk, sealCrcTrailer } from './crc'
import { publishFile, readUpTo, type FileHandle, type FileLayer } from './file-layer'

/**
 * baseline.pos: where each baseline block's version was in the log when the merge copied it
 * into the baseline (docs/FORMAT.md). The index then points at the baseline, so without this
 * file nothing says where those versions were. A replica keeps the whole log but never the
 * baseline: its index checkpoint (src/replicate/index-checkpoint.ts) points those rows back
 * at the log with this, so a store with a baseline is recovered lazily too.
 *
 *   "LDBPOS1\n" (8)  u32 version  u32 count  16 bytes store uuid
 *   count x { f64 block, f64 seq, f64 position }, by block   u32 CRC32C of everything before it
 *
 * Optional: baselines merged before it existed have none (or name only blocks merged later);
 * a reader then finds no origin for a block and does without (recovery fetches the whole log).
 */
const MAGIC = 'LDBPOS1\n'
const HEAD = 32
const RECORD = 24

export interface BaselineOrigin { block: number, seq: number, position: number }

export function originsFile (storeDir: string): string {
  return path.join(baselineFiles(storeDir).dir, 'baseline.pos')
}

export function encodeBaselineOrigins (uuid: string, origins: BaselineOrigin[]): Buffer {
  const buf = Buffer.alloc(HEAD + origins.length * RECORD + 4)
  buf.write(MAGIC, 0, 'latin1')
  buf.writeUInt32LE(1, 8)
  buf.writeUInt32LE(origins.length, 12)
  Buffer.from(uuid.replace(/-/g, ''), 'hex').copy(buf, 16)
  origins.forEach((o, i) => {
    const at = HEAD + i * RECORD
    buf.writeDoubleLE(o.block, at)
    buf.writeDoubleLE(o.seq, at + 8)
    buf.writeDoubleLE(o.position, at + 16)
  })
  sealCrcTrailer(buf)
  return buf
}

export function decodeBaselineOrigins (uuid: string, buf: Buffer, file: string): BaselineOrigin[] {
  const bad = (why: string): never => { throw new LogdiskError('CORRUPT', `baseline origins ${file}: ${why}`) }
  if (buf.length < HEAD + 4 || buf.toString('latin1', 0, 8) !== MAGIC) bad('not a logdisk baseline origins file')
  if (!crcTrailerOk(buf)) bad('checksum mismatch')
  if (buf.readUInt32LE(8) !== 1) bad(`unknown version ${buf.readUInt32LE(8)}`)
  if (!buf.subarray(16, 32).equals(Buffer.from(uuid.replace(/-/g, ''), 'hex'))) bad('belongs to another store')
  const count = buf.readUInt32LE(12)
  if (buf.length !== HEAD + count * RECORD + 4) bad('wrong length')
  const out: BaselineOrigin[] = []
  for (let i = 0; i < count; i++) {
    const at = HEAD + i * RECORD
    out.push({ block: buf.readDoubleLE(at), seq: buf.readDoubleLE(at + 8), position: buf.readDoubleLE(at + 16) })
  }
  return out
}

/** The origins of the baseline's blocks, by block (empty when there is no file). */
export async function readBaselineOrigins (layer: FileLayer, storeDir: string, uuid: string): Promise<BaselineOrigin[]> {
  const file = originsFile(storeDir)
  let handle: FileHandle
  try {
    handle = await layer.open(file, false)
  } catch {
    return []
  }
  try {
    const buf = Buffer.alloc(await handle.size())
    const got = await readUpTo(handle, buf, 0)
    return decodeBaselineOrigins(uuid, buf.subarray(0, got), file)
  } finally {
    await handle.close()
  }
}

/** Publishes baseline.pos atomically (temporary file, fsync, rename, fsync dir). */
export async function writeBaselineOrigins (layer: FileLayer, storeDir: string, uuid: string, origins: BaselineOrigin[]): Promise<void> {
  await publishFile(layer, originsFile(storeDir), baselineFiles(storeDir).dir, encodeBaselineOrigins(uuid, [...origins].sort((a, b) => a.block - b.block)))
}

