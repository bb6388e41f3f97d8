import type { Store } from '../../src/store/store'

/**
 * Makes every compaction of `s` die right after it appends a trim move entry (the entry is in
 * the log; nothing the pass would do next is done): it throws 'killed after the trim move'.
 * Returns how many trim moves were appended so far.
 */
export function dieAfterTrimMove (s: Store): () => number {
  const parts = (s as unknown as { p: { log: { appendTrimMove: (runs: unknown[]) => Promise<void> } } }).p
  const real = parts.log.appendTrimMove.bind(parts.log)
  let moved = 0
  parts.log.appendTrimMove = async runs => {
    await real(runs)
    moved++
    throw new Error('killed after the trim move')
  }
  return () => moved
}
