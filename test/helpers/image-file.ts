import fs from 'node:fs'

/**
 * Reads and writes of an image file (a mounted current.img) for the tests, whole: as many
 * system calls as it takes (a read stops early only at the end of the file).
 */

/** Writes `data` at `offset` and fsyncs; throws the first error (ENOSPC, EIO, ...) after the bytes written before it. */
export function writeAt (file: string, offset: number, data: Buffer): void {
  const fd = fs.openSync(file, 'r+')
  try {
    for (let done = 0; done < data.length;) done += fs.writeSync(fd, data, done, data.length - done, offset + done)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}

/** `length` bytes from `offset` (fewer at the end of the file). */
export function readAt (file: string, offset: number, length: number): Buffer {
  const buf = Buffer.alloc(length)
  const fd = fs.openSync(file, 'r')
  try {
    let done = 0
    while (done < length) {
      const n = fs.readSync(fd, buf, done, length - done, offset + done)
      if (n === 0) break
      done += n
    }
    return buf.subarray(0, done)
  } finally {
    fs.closeSync(fd)
  }
}
