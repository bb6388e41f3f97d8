import crypto from 'node:crypto'

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
const PAIR_BYTES = 32
export const SET_IDENTITY_PREFIX = 'c2-'

export class BlockSetHash {
  /** Lane sums; kept as doubles between reductions (exact below 2^53). */
  private readonly lanes = new Float64Array(LANES)
  private readonly cipher = crypto.createCipheriv('aes-256-ecb', KEY, null).setAutoPadding(false)
  private plain = Buffer.alloc(0)

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
    if (this.plain.length < n * PAIR_BYTES) this.plain = Buffer.alloc(n * PAIR_BYTES)
    let m = 0
    for (let i = 0; i < n; i++) {
      if (!keep(i)) continue
      const block = blocks[i]
      const lo = block % 0x100000000
      const hi = Math.floor(block / 0x100000000)
      const o = m * PAIR_BYTES
      this.plain.writeUInt32LE(lo, o)
      this.plain.writeUInt32LE(hi, o + 4)
      this.plain.writeUInt32LE(crcs[i], o + 8)
      this.plain.writeUInt32LE(0, o + 12)
      this.plain.writeUInt32LE(lo, o + 16)
      this.plain.writeUInt32LE(hi, o + 20)
      this.plain.writeUInt32LE(crcs[i], o + 24)
      this.plain.writeUInt32LE(1, o + 28)
      m++
    }
    if (m === 0) return
    const out = this.cipher.update(this.plain.subarray(0, m * PAIR_BYTES))
    const sums = new Float64Array(LANES)
    for (let o = 0; o < out.length; o += PAIR_BYTES) {
      for (let l = 0; l < LANES; l++) sums[l] += out.readUInt32LE(o + l * 4)
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
