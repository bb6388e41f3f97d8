import { crc32c as nativeCrc32c } from '@node-rs/crc32'
import { loadAddon } from './native-addon'

/**
 * CRC32C (Castagnoli), hardware accelerated through @node-rs/crc32. Every entry header and
 * every block carries one (the durability contract in DESIGN.md). `initial` chains a CRC over
 * several buffers without concatenating them.
 */
export function crc32c (data: Uint8Array, initial = 0): number {
  return nativeCrc32c(data as Buffer, initial) >>> 0
}

/** Writes the CRC32C of all of `buf` but its last 4 bytes into those 4 (LE): the trailer that closes a file format. */
export function sealCrcTrailer (buf: Buffer): void {
  buf.writeUInt32LE(crc32c(buf.subarray(0, buf.length - 4)), buf.length - 4)
}

/** Whether the last 4 bytes of `buf` hold the CRC32C of the rest (sealCrcTrailer). */
export function crcTrailerOk (buf: Buffer): boolean {
  return buf.length >= 4 && buf.readUInt32LE(buf.length - 4) === crc32c(buf.subarray(0, buf.length - 4))
}

interface BlockCrcAddon {
  blockCrcs: (data: Uint8Array, blockBytes: number, out: Uint32Array) => void
  supported: () => boolean
}

/** native/block-crc.c, when built and this CPU has SSE4.2 (LOGDISK_PORTABLE_CRC=1: never). */
const blockAddon = ((): BlockCrcAddon | undefined => {
  if (process.env.LOGDISK_PORTABLE_CRC === '1') return undefined
  const a = loadAddon<BlockCrcAddon>('block-crc')
  return a?.supported() === true ? a : undefined
})()

/** Whether blockCrcs runs in the addon here (four blocks at a time, ~10x one call per block). */
export const fastBlockCrcs = blockAddon !== undefined

/**
 * The CRC32C of each of the first `count` blocks of `data` (blocks of `blockBytes`). The addon
 * computes four blocks side by side in one call; without it, one crc32c call per block. The
 * same numbers either way (test/block-crc.test.ts).
 */
export function blockCrcs (data: Uint8Array, count: number, blockBytes: number): Uint32Array {
  const out = new Uint32Array(count)
  if (blockAddon !== undefined && blockBytes % 8 === 0) {
    blockAddon.blockCrcs(data, blockBytes, out)
    return out
  }
  return blockCrcsPortable(data, count, blockBytes, out)
}

/** blockCrcs without the addon (also what tests compare it with). */
export function blockCrcsPortable (data: Uint8Array, count: number, blockBytes: number, out = new Uint32Array(count)): Uint32Array {
  for (let i = 0; i < count; i++) out[i] = crc32c(data.subarray(i * blockBytes, (i + 1) * blockBytes))
  return out
}
