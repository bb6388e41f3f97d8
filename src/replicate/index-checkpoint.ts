import { unpack } from 'msgpackr'
import { LogdiskError } from '../errors'
import { decodeArchive, encodeArchive } from '../archive/codec'
import { CHECKPOINT_KEY } from '../store/keys'

/**
 * A replica's index checkpoint (docs/FORMAT.md "Replica objects", docs/REPLICATION.md): every
 * row of the store's LevelDB index from one consistent view, covering the log up to the
 * checkpoint row ('c': seq, position) it contains. Like the index itself, it is a cache of
 * the log: recovery loads it instead of scanning the log before it, and scans only what
 * follows. Layout, inside the archive codec (LDARCH1: compressed, SHA-256):
 *
 *   offset  bytes
 *        0      8  magic 'LDIDX1\n\0'
 *        8      4  u32 BE: number of rows
 *       12      .  rows: u32 BE key length, key, u32 BE value length, value
 */
export const INDEX_CHECKPOINT_MAGIC = 'LDIDX1\n\0'

export interface IndexCheckpointInfo {
  /** The object holding it. */
  name: string
  /** What it covers: the log before `position`, entries up to `seq`. */
  seq: number
  position: number
}

export async function encodeIndexCheckpoint (rows: AsyncIterable<[Buffer, Buffer]>): Promise<{ data: Buffer, seq: number, position: number, rows: number }> {
  let cp: { seq: number, position: number } | undefined
  // Packed into 1 MiB chunks as the rows come (no object per row is kept).
  const chunks: Buffer[] = []
  let chunk = Buffer.allocUnsafe(1 << 20)
  let at = 0
  let n = 0
  const room = (bytes: number): void => {
    if (at + bytes <= chunk.length) return
    chunks.push(chunk.subarray(0, at))
    chunk = Buffer.allocUnsafe(Math.max(1 << 20, bytes))
    at = 0
  }
  for await (const [k, v] of rows) {
    if (k.equals(CHECKPOINT_KEY)) cp = unpack(v) as { seq: number, position: number }
    room(8 + k.length + v.length)
    chunk.writeUInt32BE(k.length, at); at += 4
    k.copy(chunk, at); at += k.length
    chunk.writeUInt32BE(v.length, at); at += 4
    v.copy(chunk, at); at += v.length
    n++
  }
  chunks.push(chunk.subarray(0, at))
  if (!cp) throw new LogdiskError('BAD_ARGUMENT', 'the index has no checkpoint row yet: nothing to ship as an index checkpoint')
  const head = Buffer.alloc(12)
  head.write(INDEX_CHECKPOINT_MAGIC, 0, 'latin1')
  head.writeUInt32BE(n, 8)
  return { data: await encodeArchive(Buffer.concat([head, ...chunks])), seq: cp.seq, position: cp.position, rows: n }
}

export async function decodeIndexCheckpoint (where: string, raw: Buffer): Promise<{ rows: Array<[Buffer, Buffer]>, seq: number, position: number }> {
  let buf: Buffer
  try {
    buf = await decodeArchive(raw)
  } catch (err) {
    // Named as a segment object's damage is: "archive: content checksum mismatch" alone named
    // neither the replica nor the object (helper-60).
    if (err instanceof LogdiskError) throw new LogdiskError(err.code, `${where}: ${err.message}`, err)
    throw err
  }
  const bad = (why: string): LogdiskError => new LogdiskError('CORRUPT', `${where}: not an index checkpoint (${why})`)
  if (buf.length < 12 || buf.toString('latin1', 0, 8) !== INDEX_CHECKPOINT_MAGIC) throw bad('bad magic')
  const n = buf.readUInt32BE(8)
  const rows: Array<[Buffer, Buffer]> = []
  let at = 12
  let cp: { seq: number, position: number } | undefined
  for (let i = 0; i < n; i++) {
    if (at + 4 > buf.length) throw bad('truncated')
    const kl = buf.readUInt32BE(at); at += 4
    if (at + kl + 4 > buf.length) throw bad('truncated')
    const k = buf.subarray(at, at + kl); at += kl
    const vl = buf.readUInt32BE(at); at += 4
    if (at + vl > buf.length) throw bad('truncated')
    const v = buf.subarray(at, at + vl); at += vl
    rows.push([k, v])
    if (k.equals(CHECKPOINT_KEY)) cp = unpack(v) as { seq: number, position: number }
  }
  if (at !== buf.length) throw bad('trailing bytes')
  if (!cp) throw bad('no checkpoint row')
  return { rows, seq: cp.seq, position: cp.position }
}
