import { crc32c as nativeCrc32c } from '@node-rs/crc32'

/**
 * CRC32C (Castagnoli), hardware accelerated through @node-rs/crc32. Every entry header and
 * every block carries one (the durability contract in DESIGN.md). `initial` chains a CRC over
 * several buffers without concatenating them.
 */
export function crc32c (data: Uint8Array, initial = 0): number {
  return nativeCrc32c(data as Buffer, initial) >>> 0
}
