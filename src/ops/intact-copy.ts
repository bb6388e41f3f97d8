import { nodeFileLayer } from '../store/file-layer'
import { checkedEnd, intactCopies } from '../store/scanner'

/**
 * Of the copies of one segment (its files on the volumes that hold it, in the pool's order),
 * the first whose every entry passes its checksums and that ends where the longest such copy
 * ends (a truncated copy lacks entries), or the first when none does (it is no worse than
 * any: verify then names what is damaged). A store whose segments have two copies reads
 * around a damaged one (mirrored-handle.ts); a command that keeps only one of them (adopt,
 * taking a copied store's segments home) must keep a good one, or it turns a store that
 * still reads right into one that has lost data (found by a hostile test, 2026-12-06).
 * Reads every copy: only called where there is a choice.
 */
export async function firstIntactCopy (files: string[], blockBytes: number): Promise<string> {
  const ends: Array<number | undefined> = []
  for (const file of files) {
    let handle
    try {
      handle = await nodeFileLayer.open(file, false)
    } catch {
      ends.push(undefined)
      continue
    }
    try {
      ends.push(await checkedEnd(handle, blockBytes))
    } finally {
      await handle.close().catch(() => undefined)
    }
  }
  return intactCopies(files, ends)[0] ?? files[0]
}
