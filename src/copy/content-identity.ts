import crypto from 'node:crypto'
import { crc32c, type Store } from '../store'

/** Blocks located per step: bounds the lookups in flight and the rows buffered. */
const LOCATE_BLOCKS = 8192

/**
 * The content identity of stream format 1 ("c1-"; format 2 streams carry the c2 identity of
 * set-identity.ts, which can be carried across changed blocks): of the image at cut `seq`, a hash of the volume geometry and of every
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
  return (await contentIdentities(store, [seq]))[0]
}

/** contentIdentity of several cuts in one walk of the blocks (a send needs both ends'). */
export async function contentIdentities (store: Store, seqs: number[]): Promise<string[]> {
  const B = store.blockBytes
  const zeroCrc = crc32c(Buffer.alloc(B))
  const geometry = Buffer.alloc(16)
  geometry.writeBigUInt64LE(BigInt(store.sizeBytes), 0)
  geometry.writeBigUInt64LE(BigInt(B), 8)
  const hashes = seqs.map(() => crypto.createHash('sha256').update(geometry))
  const rows = Buffer.alloc(LOCATE_BLOCKS * 12)
  for await (const { blocks, at } of store.versionsAt(seqs, LOCATE_BLOCKS)) {
    for (let k = 0; k < seqs.length; k++) {
      const { where, crcs } = at[k]
      let n = 0
      // A trimmed block (where < 0) is absent, like one never written: it reads as zeros.
      for (let i = 0; i < blocks.length; i++) {
        if (where[i] < 0 || crcs[i] === zeroCrc) continue
        const block = blocks[i]
        rows.writeUInt32LE(block % 0x100000000, n)
        rows.writeUInt32LE(Math.floor(block / 0x100000000), n + 4)
        rows.writeUInt32LE(crcs[i], n + 8)
        n += 12
      }
      if (n > 0) hashes[k].update(rows.subarray(0, n))
    }
  }
  return hashes.map(h => `c1-${h.digest('hex').slice(0, 40)}`)
}

/** The sequence number of the newest entry of the store's log. */
export function currentSeq (store: Store): number {
  return store.status().index.seq
}
