import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError, fromSystemError } from '../errors'
import { syncDir } from './sync-dir'

/**
 * Makes the new file `out` whole or not at all (the atomic publish of litestream's
 * file/replica_client.go): `fill` writes it under `<out>.partial`, which is then fsynced,
 * renamed to `out`, and the directory fsynced. If anything fails the partial file is removed
 * and `out` is as it was. An existing `out` is refused unless `force` (then replaced whole at
 * the rename). What restore, export and send write their files with. Asynchronous calls only:
 * the mount daemon runs these, and a synchronous fsync of a large file would stall every FUSE
 * request for as long.
 */
export async function writePartialThenRename<T> (
  out: string, force: boolean, fill: (fh: fs.promises.FileHandle, partial: string) => Promise<T>
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
  try {
    result = await fill(fh, partial)
    await fh.sync().catch(err => { throw fromSystemError(err, `fsync ${partial}`) })
    await fh.close()
  } catch (err) {
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

/** Writes all of `data` at `offset` (a write may take fewer bytes than asked). */
export async function writeFully (fh: fs.promises.FileHandle, data: Buffer, offset: number | null): Promise<void> {
  for (let done = 0; done < data.length;) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, offset === null ? null : offset + done)
    done += bytesWritten
  }
}
