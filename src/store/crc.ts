import { crc32c as nativeCrc32c } from '@node-rs/crc32'

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
