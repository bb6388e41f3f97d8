import { blockCrcs, crc32c, fastBlockCrcs } from './crc'
import { crc32cOfBlocks } from './crc-combine'

/** Checking blocks read back against the CRC32C each was written with. */

/**
 * Index of the first block of `data` whose CRC32C is not the expected one, or -1.
 *
 * With the block-crc addon (crc.ts `fastBlockCrcs`) every block's CRC is computed, four
 * blocks side by side, and compared: about five times the speed of one CRC over the whole run
 * (32 vs 6.6 GB/s here), and reads spend it on the event loop (a third of its time under 1 MiB
 * sequential reads before). Without it, firstBadBlockOfRun.
 */
export function firstBadBlock (data: Buffer, crcs: Uint32Array, blockBytes: number): number {
  const n = blocksToCheck(data, crcs, blockBytes)
  if (n > 1 && fastBlockCrcs) return firstDifference(blockCrcs(data, n, blockBytes), crcs, 0)
  return firstBadBlockOfRun(data, crcs, blockBytes)
}

/**
 * firstBadBlock without the addon. A run of blocks is checked in one pass: the CRC32C of the
 * whole run against the CRC its blocks' expected CRCs compose to (crc-combine.ts), which costs
 * half the CPU of a native call per block. It finds every corruption the block-by-block check
 * finds with the same guarantees: CRC32C has Hamming distance 4 over any message up to 2^31
 * bits (Koopman), so over a 4 KiB block and over a run of 1 MiB alike it catches every error
 * of up to 3 bits and every burst of up to 32, and misses other corruption with probability
 * 2^-32 either way. Only when the run fails are its blocks checked one by one, to name the bad
 * one.
 */
export function firstBadBlockOfRun (data: Buffer, crcs: Uint32Array, blockBytes: number): number {
  const n = blocksToCheck(data, crcs, blockBytes)
  if (n > 1 && crc32c(data.subarray(0, n * blockBytes)) === crc32cOfBlocks(crcs.subarray(0, n), blockBytes)) return -1
  for (let i = 0; i < n; i++) {
    if (crc32c(data.subarray(i * blockBytes, (i + 1) * blockBytes)) !== crcs[i]) return i
  }
  return -1
}

/**
 * Indexes of every block of `data` whose CRC32C is not the expected one (`crcs[i]` for block
 * i), in order: the first as firstBadBlock finds it, then every block after it one by one.
 */
export function badBlocks (data: Buffer, crcs: Uint32Array, blockBytes: number): number[] {
  const first = firstBadBlock(data, crcs, blockBytes)
  if (first < 0) return []
  const bad = [first]
  const n = blocksToCheck(data, crcs, blockBytes)
  const actual = blockCrcs(data, n, blockBytes)
  for (let i = first + 1; (i = firstDifference(actual, crcs, i)) >= 0; i++) bad.push(i)
  return bad
}

/** Whole blocks of `data` that have an expected CRC. */
function blocksToCheck (data: Buffer, crcs: Uint32Array, blockBytes: number): number {
  return Math.min(crcs.length, Math.floor(data.length / blockBytes))
}

/** The first index from `from` on where `actual` and `expected` differ (over actual's length), or -1. */
function firstDifference (actual: Uint32Array, expected: Uint32Array, from: number): number {
  for (let i = from; i < actual.length; i++) if (actual[i] !== expected[i]) return i
  return -1
}
