import crypto from 'node:crypto'
import { crc32c, type Store } from '../store'

/** Blocks located per step: bounds the lookups in flight and the rows buffered. */
const LOCATE_BLOCKS = 8192

/**
 * The content identity of the image at cut `seq`: a hash of the volume geometry and of every
 * non-zero block's address and CRC32C, read from the index (no data is read). Two images with
 * the same identity hold the same bytes (up to CRC32C collisions of single blocks), whatever
 * store or log history they come from, so a receiver can tell that it holds an incremental's base.
 *
 * Only blocks the block map holds can have a version at the cut (Store.versionsAt): each one's
 * version comes from the map when its newest version is at or before the cut, and from one
 * index lookup otherwise. The cost is the blocks ever written, in memory, plus one lookup per
 * block rewritten since the cut; never-written blocks of a large sparse volume cost nothing.
 * The same hash as a walk of blockCrcsAt (the rows in block order), so identities match those
 * of earlier releases and of streams they wrote.
 */
export async function contentIdentity (store: Store, seq: number): Promise<string> {
  const B = store.blockBytes
  const zeroCrc = crc32c(Buffer.alloc(B))
  const hash = crypto.createHash('sha256')
  const geometry = Buffer.alloc(16)
  geometry.writeBigUInt64LE(BigInt(store.sizeBytes), 0)
  geometry.writeBigUInt64LE(BigInt(B), 8)
  hash.update(geometry)
  const rows = Buffer.alloc(LOCATE_BLOCKS * 12)
  for await (const { blocks, where, crcs } of store.versionsAt(seq, LOCATE_BLOCKS)) {
    let at = 0
    // A trimmed block (where < 0) is absent, like one never written: it reads as zeros.
    for (let i = 0; i < blocks.length; i++) {
      if (where[i] < 0 || crcs[i] === zeroCrc) continue
      const block = blocks[i]
      rows.writeUInt32LE(block % 0x100000000, at)
      rows.writeUInt32LE(Math.floor(block / 0x100000000), at + 4)
      rows.writeUInt32LE(crcs[i], at + 8)
      at += 12
    }
    if (at > 0) hash.update(rows.subarray(0, at))
  }
  return `c1-${hash.digest('hex').slice(0, 40)}`
}
/** The sequence number of the newest entry of the store's log. */
export function currentSeq (store: Store): number {
  return store.status().index.seq
}
