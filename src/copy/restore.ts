import { pointPieces, writeImage } from './export'
import type { Store } from '../store'

export interface RestoreResult {
  blocks: number
  bytes: number
}

/**
 * Writes the image at sequence `seq` to `out`: a sparse file of the volume's size at that
 * point (Store.sizeAt: a snapshot's, or the size before the next resize), with holes
 * where blocks were never written (or are all zeros). Written under a temporary name and
 * renamed once complete and fsynced, so `out` is never a half-restored image (writeImage, as
 * export does; reads run ahead of the writes in large chunks). Fails, writing nothing, if the
 * store gives the point up while the copy runs (compaction past the history horizon).
 */
export async function restoreImage (
  store: Store, seq: number, out: string,
  opts: { force?: boolean, onProgress?: (doneBytes: number, totalBytes: number) => void } = {}
): Promise<RestoreResult> {
  const B = store.blockBytes
  const size = store.sizeAt(seq)
  const pieces = pointPieces(store, seq, `sequence ${seq}`, 0, size / B)
  const written = await writeImage(out, size, pieces, { blockBytes: B, force: opts.force, onProgress: opts.onProgress })
  return { blocks: written.writtenBytes / B, bytes: written.writtenBytes }
}
