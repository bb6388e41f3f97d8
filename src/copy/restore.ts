import fs from 'node:fs'
import { LogdiskError, fromSystemError } from '../errors'
import type { Store } from '../store'

export interface RestoreResult {
  blocks: number
  bytes: number
}

/**
 * Writes the image at sequence `seq` to `out`: a sparse file of the volume's size, with holes
 * where blocks were never written (or are all zeros). Written under a temporary name and
 * renamed once complete and fsynced, so `out` is never a half-restored image.
 */
export async function restoreImage (
  store: Store, seq: number, out: string,
  opts: { force?: boolean, onProgress?: (doneBytes: number, totalBytes: number) => void } = {}
): Promise<RestoreResult> {
  if (fs.existsSync(out) && !opts.force) throw new LogdiskError('BAD_ARGUMENT', `${out} exists; give --force to overwrite it`)
  const tmp = `${out}.partial`
  // Asynchronous calls only: the mount daemon runs this, and a synchronous fsync of a large
  // image would stall every FUSE request for as long.
  let fh: fs.promises.FileHandle
  try {
    fh = await fs.promises.open(tmp, 'w', 0o644)
  } catch (err) {
    throw fromSystemError(err, `create ${tmp}`)
  }
  const zero = Buffer.alloc(store.blockBytes)
  let blocks = 0
  try {
    await fh.truncate(store.sizeBytes).catch(err => { throw fromSystemError(err, `extend ${tmp}`) })
    for await (const { block, data } of store.imageAt(seq)) {
      if (!data.equals(zero)) {
        for (let done = 0; done < data.length;) {
          const { bytesWritten } = await fh.write(data, done, data.length - done, block * store.blockBytes + done).catch(err => { throw fromSystemError(err, `write ${tmp}`) })
          done += bytesWritten
        }
        blocks++
      }
      opts.onProgress?.((block + 1) * store.blockBytes, store.sizeBytes)
    }
    await fh.sync().catch(err => { throw fromSystemError(err, `fsync ${tmp}`) })
  } catch (err) {
    await fh.close().catch(() => undefined)
    await fs.promises.rm(tmp, { force: true })
    throw err
  }
  await fh.close()
  await fs.promises.rename(tmp, out)
  opts.onProgress?.(store.sizeBytes, store.sizeBytes)
  return { blocks, bytes: blocks * store.blockBytes }
}
