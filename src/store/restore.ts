import fs from 'node:fs'
import { LogdiskError, fromSystemError } from '../errors'
import type { Store } from './store'

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
  let fd: number
  try {
    fd = fs.openSync(tmp, 'w', 0o644)
  } catch (err) {
    throw fromSystemError(err, `create ${tmp}`)
  }
  const zero = Buffer.alloc(store.blockBytes)
  let blocks = 0
  try {
    fs.ftruncateSync(fd, store.sizeBytes)
    for await (const { block, data } of store.imageAt(seq)) {
      if (!data.equals(zero)) {
        await new Promise<void>((resolve, reject) => fs.write(fd, data, 0, data.length, block * store.blockBytes, err => err ? reject(fromSystemError(err, `write ${tmp}`)) : resolve()))
        blocks++
      }
      opts.onProgress?.((block + 1) * store.blockBytes, store.sizeBytes)
    }
    fs.fsyncSync(fd)
  } catch (err) {
    fs.closeSync(fd)
    fs.rmSync(tmp, { force: true })
    throw err
  }
  fs.closeSync(fd)
  fs.renameSync(tmp, out)
  opts.onProgress?.(store.sizeBytes, store.sizeBytes)
  return { blocks, bytes: blocks * store.blockBytes }
}
