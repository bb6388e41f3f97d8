import { nodeFileLayer } from '../store/file-layer'
import { SEGMENT_HEADER_BYTES } from '../store/format'
import { scanSegment } from '../store/scanner'

/**
 * Of the copies of one segment (its files on the volumes that hold it, in the pool's order),
 * the first whose every entry passes its checksums, or the first when none does (it is no
 * worse than any: verify then names what is damaged). A store whose segments have two copies
 * reads around a damaged one (mirrored-handle.ts); a command that keeps only one of them
 * (adopt, taking a copied store's segments home) must keep a good one, or it turns a store
 * that still reads right into one that has lost data (found by a hostile test, 2026-12-06).
 * Reads every copy until one is intact: only called where there is a choice.
 */
export async function firstIntactCopy (files: string[], blockBytes: number): Promise<string> {
  for (const file of files) {
    if (await intact(file, blockBytes)) return file
  }
  return files[0]
}

/** Whether every entry of a segment file, from its header to its end, passes its checksums. */
async function intact (file: string, blockBytes: number): Promise<boolean> {
  let handle
  try {
    handle = await nodeFileLayer.open(file, false)
  } catch {
    return false
  }
  try {
    for await (const item of scanSegment(handle, SEGMENT_HEADER_BYTES, blockBytes, true)) {
      // A tail a crash cut short (truncated) is what every copy of the last segment may show.
      if (item.type === 'end') return item.torn === undefined || item.truncated === true
      if (item.badBlocks.length > 0) return false
    }
    return true
  } catch {
    return false
  } finally {
    await handle.close().catch(() => undefined)
  }
}
