import crypto from 'node:crypto'
import { crc32c, type Store } from '../store'

/**
 * The content identity of the image at cut `seq`: a hash of the volume geometry and of every
 * non-zero block's address and CRC32C, read from the index (no data is read). Two images with
 * the same identity hold the same bytes (up to CRC32C collisions of single blocks), whatever
 * store or log history they come from, so a receiver can tell that it holds an incremental's base.
 */
export async function contentIdentity (store: Store, seq: number): Promise<string> {
  const zeroCrc = crc32c(Buffer.alloc(store.blockBytes))
  const hash = crypto.createHash('sha256')
  const geometry = Buffer.alloc(16)
  geometry.writeBigUInt64LE(BigInt(store.sizeBytes), 0)
  geometry.writeBigUInt64LE(BigInt(store.blockBytes), 8)
  hash.update(geometry)
  const row = Buffer.alloc(12)
  const rows: Buffer[] = []
  for await (const [block, crc] of store.blockCrcsAt(seq)) {
    if (crc === zeroCrc) continue
    row.writeBigUInt64LE(BigInt(block), 0)
    row.writeUInt32LE(crc, 8)
    rows.push(Buffer.from(row))
    if (rows.length >= 4096) hash.update(Buffer.concat(rows.splice(0)))
  }
  if (rows.length > 0) hash.update(Buffer.concat(rows))
  return `c1-${hash.digest('hex').slice(0, 40)}`
}

/** The sequence number of the newest entry of the store's log. */
export function currentSeq (store: Store): number {
  return store.status().index.seq
}
