import crypto from 'node:crypto'
import os from 'node:os'

/**
 * The content identity of stream format 2 ("c2-"): a hash of the set of (block, CRC32C) pairs
 * of an image's non-zero blocks that is a sum, so it can be updated instead of recomputed.
 * Removing the pairs of the blocks that changed between two cuts and adding their new pairs
 * turns one cut's identity into the other's, in work proportional to what changed (issue 12
 * item 6), where the ordered SHA-256 of format 1 ("c1-") needs a walk of every block.
 *
 * Each pair is mapped to 256 pseudo-random bits by AES-256 in ECB mode under a fixed public
 * key (two 16-byte blocks: block number low and high words, CRC, lane tag 0 or 1), and the
 * identity is the lane-wise sum of those, eight 32-bit lanes each modulo 2^32, started from
 * the SHA-256 of the geometry. Two different sets collide only if their differences cancel in
 * all 256 bits: no adversary is modelled (CRC32C of single blocks is not collision-resistant
 * either), only accidental equality, which the pseudo-random mapping makes negligible; unlike
 * XOR, a pair counted twice does not cancel out. AES in ECB is one call per chunk of pairs and
 * runs at memory speed, so even a full walk costs little beyond the walk itself.
 */

const KEY = crypto.createHash('sha256').update('logdisk content identity c2').digest()
const LANES = 8
const PAIR_WORDS = 8
const LITTLE_ENDIAN = os.endianness() === 'LE'
const swap32 = (x: number): number => (((x & 0xff) << 24) | ((x & 0xff00) << 8) | ((x >>> 8) & 0xff00) | (x >>> 24)) >>> 0
export const SET_IDENTITY_PREFIX = 'c2-'
/** Bytes enciphered per call (a whole number of pairs). */
const CIPHER_BYTES = 64 * 1024

export class BlockSetHash {
  /** Lane sums; kept as doubles between reductions (exact below 2^53). */
  private readonly lanes = new Float64Array(LANES)
  private readonly cipher = crypto.createCipheriv('aes-256-ecb', KEY, null).setAutoPadding(false)
  private plain = new Uint32Array(0)

  /** The hash of the empty set for a volume of this geometry (its image is all zeros). */
  static empty (sizeBytes: number, blockBytes: number): BlockSetHash {
    const geometry = Buffer.alloc(16)
    geometry.writeBigUInt64LE(BigInt(sizeBytes), 0)
    geometry.writeBigUInt64LE(BigInt(blockBytes), 8)
    const start = crypto.createHash('sha256').update('logdisk c2 geometry').update(geometry).digest()
    const h = new BlockSetHash()
    for (let i = 0; i < LANES; i++) h.lanes[i] = start.readUInt32LE(i * 4)
    return h
  }

  /**
   * A sum of pairs alone, without the geometry's start: pairs gathered before the identity
   * they go into is known (receive sums a stream's pairs while it checks the stream), added
   * to it later with `add`.
   */
  static pairsOnly (): BlockSetHash {
    return new BlockSetHash()
  }

  /** Adds another hash's lane sums (a `pairsOnly` sum) to this one. */
  add (other: BlockSetHash): void {
    for (let l = 0; l < LANES; l++) this.lanes[l] = (this.lanes[l] + other.lanes[l]) >>> 0
  }

  /** A hash from its identity string; undefined if it is not a c2 identity. */
  static parse (identity: string): BlockSetHash | undefined {
    if (!/^c2-[0-9a-f]{64}$/.test(identity)) return undefined
    const bytes = Buffer.from(identity.slice(SET_IDENTITY_PREFIX.length), 'hex')
    const h = new BlockSetHash()
    for (let i = 0; i < LANES; i++) h.lanes[i] = bytes.readUInt32LE(i * 4)
    return h
  }

  /** Adds (sign 1) or removes (sign -1) the pairs (blocks[i], crcs[i]) for which keep(i). */
  update (sign: 1 | -1, blocks: ArrayLike<number>, crcs: ArrayLike<number>, keep: (i: number) => boolean): void {
    const n = blocks.length
    if (this.plain.length < n * PAIR_WORDS) this.plain = new Uint32Array(n * PAIR_WORDS)
    const plain = this.plain
    let m = 0
    for (let i = 0; i < n; i++) {
      if (!keep(i)) continue
      const block = blocks[i]
      const lo = block % 0x100000000
      const hi = Math.floor(block / 0x100000000)
      const o = m * PAIR_WORDS
      plain[o] = lo
      plain[o + 1] = hi
      plain[o + 2] = crcs[i]
      plain[o + 3] = 0
      plain[o + 4] = lo
      plain[o + 5] = hi
      plain[o + 6] = crcs[i]
      plain[o + 7] = 1
      m++
    }
    if (m === 0) return
    // Typed arrays are in the machine's byte order; the hash is defined little-endian.
    if (!LITTLE_ENDIAN) for (let k = 0; k < m * PAIR_WORDS; k++) plain[k] = swap32(plain[k])
    const sums = new Float64Array(LANES)
    // At most CIPHER_BYTES a call: larger outputs are fresh mmapped memory each time, which
    // costs more to fault in than the AES itself (4-10x slower per byte on a VM).
    for (let at = 0; at < m * PAIR_WORDS * 4; at += CIPHER_BYTES) {
      const bytes = this.cipher.update(Buffer.from(plain.buffer, at, Math.min(CIPHER_BYTES, m * PAIR_WORDS * 4 - at)))
      const out = bytes.byteOffset % 4 === 0 ? new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4) : new Uint32Array(Uint8Array.from(bytes).buffer)
      for (let o = 0; o < out.length; o += LANES) {
        for (let l = 0; l < LANES; l++) sums[l] += LITTLE_ENDIAN ? out[o + l] : swap32(out[o + l])
      }
    }
    for (let l = 0; l < LANES; l++) this.lanes[l] = (this.lanes[l] + sign * (sums[l] % 0x100000000)) >>> 0
  }

  /** The identity string: "c2-" and the eight lanes, little-endian, in hex. */
  toString (): string {
    const bytes = Buffer.alloc(LANES * 4)
    for (let i = 0; i < LANES; i++) bytes.writeUInt32LE(this.lanes[i] >>> 0, i * 4)
    return SET_IDENTITY_PREFIX + bytes.toString('hex')
  }
}
