import { crc32c, type Store } from '../store'
import { BlockSetHash } from './block-set-hash'
import { readIdentities } from './identity-cache'

/** Blocks located per step of a walk: bounds the lookups in flight and the rows buffered. */
const LOCATE_BLOCKS = 8192

/**
 * The c2 content identities (block-set-hash.ts) of the images at cuts `seqs`: for each cut,
 * the identity of a snapshot at that cut kept in the store's identity file, else one carried
 * from the nearest cut whose identity is known (`known`, by seq, and the kept ones) across
 * the blocks changed in between, else one walk of every block with a version (as format 1's
 * identity is computed) for the newest cut still without one, and carried from there to the
 * others (a send of an increment that no identity is known for walks once, not twice). Carrying costs the log entries
 * between the two cuts plus a lookup per changed block; it is chosen when the cuts are fewer
 * entries apart than the store has blocks written, which bounds it by the walk it replaces.
 *
 * What is hashed is the same whichever way it is computed: every block whose version at the
 * cut is data with a CRC other than that of a zero block. A trimmed or never-written block,
 * or one written with zeros, is absent, so the identity is that of the bytes the image reads.
 */
export async function setIdentitiesAt (store: Store, seqs: number[], known: Map<number, string> = new Map()): Promise<string[]> {
  const have = new Map([...readIdentities(store), ...known])
  const out: Array<string | undefined> = seqs.map(seq => have.get(seq))
  const blocksWritten = store.status().writtenBytes / store.blockBytes
  while (true) {
    for (let k = 0; k < seqs.length; k++) {
      if (out[k] !== undefined) continue
      let from: number | undefined
      for (const seq of have.keys()) {
        if (from === undefined || Math.abs(seq - seqs[k]) < Math.abs(from - seqs[k])) from = seq
      }
      if (from === undefined || Math.abs(from - seqs[k]) >= blocksWritten) continue
      out[k] = await carryIdentity(store, have.get(from)!, from, seqs[k])
      have.set(seqs[k], out[k]!)
    }
    // The cuts still without one: the newest is walked (its versions are mostly the map's
    // newest, so few need the index), then the others carried from it when they are near.
    let newest = -1
    for (let k = 0; k < seqs.length; k++) if (out[k] === undefined && (newest < 0 || seqs[k] > seqs[newest])) newest = k
    if (newest < 0) break
    out[newest] = (await walkIdentities(store, [seqs[newest]]))[0]
    have.set(seqs[newest], out[newest]!)
  }
  return out as string[]
}

/**
 * The identity at cut `to` from the identity at cut `from`: the changed blocks' pairs swapped.
 * `atFrom` may give some blocks' CRC at `from` (ABSENT: no data), read before they were
 * rewritten (receive does, from the block map, as it applies a stream): those need no index
 * seek, which every block rewritten since an older cut otherwise costs.
 */
export async function carryIdentity (store: Store, identity: string, from: number, to: number, atFrom?: Map<number, number>): Promise<string> {
  const h = BlockSetHash.parse(identity)
  if (!h) throw new Error(`not a c2 identity: ${identity}`)
  if (from === to) return identity
  const changed: number[] = []
  for await (const block of store.changedBlocks(Math.min(from, to), Math.max(from, to))) changed.push(block)
  const zeroCrc = crc32c(Buffer.alloc(store.blockBytes))
  const present = (where: Float64Array, crcs: Uint32Array) => (j: number) => where[j] >= 0 && crcs[j] !== zeroCrc
  for (let i = 0; i < changed.length; i += LOCATE_BLOCKS) {
    const blocks = Float64Array.from(changed.slice(i, i + LOCATE_BLOCKS))
    // Pairs at `to` are added, pairs at `from` removed, whichever cut is the older.
    if (to > 0) {
      const [after] = await store.versionsOf([to], blocks)
      h.update(1, blocks, after.crcs, present(after.where, after.crcs))
    }
    // Cut 0 is before the first entry: nothing to remove (and no index seek per block to find
    // that out, which a full receive's million blocks would pay).
    if (from === 0) continue
    const known = atFrom ? blocks.filter(b => atFrom.has(b)) : new Float64Array(0)
    const crcs = Uint32Array.from(known, b => Math.max(0, atFrom!.get(b)!))
    h.update(-1, known, crcs, j => atFrom!.get(known[j]) !== ABSENT && crcs[j] !== zeroCrc)
    const unknown = known.length === 0 ? blocks : blocks.filter(b => !atFrom!.has(b))
    if (unknown.length === 0) continue
    const [before] = await store.versionsOf([from], unknown)
    h.update(-1, unknown, before.crcs, present(before.where, before.crcs))
  }
  return h.toString()
}

/** In carryIdentity's `atFrom`: the block had no data at the cut (never written, or trimmed). */
export const ABSENT = -1

/** The identities of cuts `seqs` by one walk of every block with a version (Store.versionsAt, in the map's order). */
export async function walkIdentities (store: Store, seqs: number[]): Promise<string[]> {
  const zeroCrc = crc32c(Buffer.alloc(store.blockBytes))
  const hashes = seqs.map(() => BlockSetHash.empty(store.sizeBytes, store.blockBytes))
  for await (const { blocks, at } of store.versionsAt(seqs, LOCATE_BLOCKS, 'any')) { // a sum: any order
    for (let k = 0; k < seqs.length; k++) {
      const { where, crcs } = at[k]
      hashes[k].update(1, blocks, crcs, i => where[i] >= 0 && crcs[i] !== zeroCrc)
    }
  }
  return hashes.map(h => h.toString())
}
