import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError, fromSystemError } from '../errors'
import { syncDir } from './sync-dir'
import { Writeback } from './writeback'

/**
 * Makes the new file `out` whole or not at all (the atomic publish of litestream's
 * file/replica_client.go): `fill` writes it under `<out>.partial`, which is then fsynced,
 * renamed to `out`, and the directory fsynced. If anything fails the partial file is removed
 * and `out` is as it was. An existing `out` is refused unless `force` (then replaced whole at
 * the rename). `fill` is given a Writeback to count its writes with (writeFully does), so
 * the disk writes the file while it is filled; it is settled before the fsync. What restore, export and send write their files with. Asynchronous calls only:
 * the mount daemon runs these, and a synchronous fsync of a large file would stall every FUSE
 * request for as long.
 */
export async function writePartialThenRename<T> (
  out: string, force: boolean, fill: (fh: fs.promises.FileHandle, partial: string, writeback: Writeback) => Promise<T>
): Promise<T> {
  if (!force && fs.existsSync(out)) throw new LogdiskError('BAD_ARGUMENT', `${out} exists; give --force to overwrite it`)
  const partial = `${out}.partial`
  let fh: fs.promises.FileHandle
  try {
    fh = await fs.promises.open(partial, 'w', 0o644)
  } catch (err) {
    throw fromSystemError(err, `create ${partial}`)
  }
  let result: T
  const writeback = new Writeback(fh, partial)
  try {
    result = await fill(fh, partial, writeback)
    await writeback.settle()
    await fh.sync().catch(err => { throw fromSystemError(err, `fsync ${partial}`) })
    await fh.close()
  } catch (err) {
    await writeback.settle().catch(() => undefined) // no sync left running on the descriptor
    await fh.close().catch(() => undefined)
    await fs.promises.rm(partial, { force: true })
    throw err instanceof LogdiskError ? err : fromSystemError(err, `write ${partial}`)
  }
  try {
    await fs.promises.rename(partial, out)
  } catch (err) {
    await fs.promises.rm(partial, { force: true })
    throw fromSystemError(err, `rename ${partial} to ${out}`)
  }
  await syncDir(path.dirname(out))
  return result
}

/**
 * Bytes per write(2) of a copy. Measured on the 2-CPU VM of bench/copies.mjs (6.18 kernel,
 * ext4): writing 2 GiB into a new file took 0.4-0.8 s in writes of 256-512 KiB, 1-2.7 s in
 * writes of 1 MiB and 4-18 s in writes of 2 or 4 MiB (the kernel's time goes to copying into
 * freshly allocated page-cache folios, larger for larger writes). cp writes 128 KiB at a time.
 */
export const WRITE_BYTES = 512 * 1024

/**
 * Writes all of `data` at `offset` (null: at the file position), in writes of at most
 * WRITE_BYTES (a write may also take fewer bytes than asked), counted by `writeback`.
 */
export async function writeFully (fh: fs.promises.FileHandle, data: Buffer, offset: number | null, writeback?: Writeback): Promise<void> {
  for (let done = 0; done < data.length;) {
    const length = Math.min(WRITE_BYTES, data.length - done)
    const { bytesWritten } = await fh.write(data, done, length, offset === null ? null : offset + done)
    done += bytesWritten
  }
  writeback?.wrote(data.length)
}
