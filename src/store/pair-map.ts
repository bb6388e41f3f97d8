/**
 * A map keyed by a pair of numbers (a history record's seq and chunk), without making a string
 * key per lookup: a commit looks up one pair per record it changes, and under random 4 KiB
 * writes every version is a record of its own, so `${chunk}:${seq}` keys cost a string
 * allocation and hash per version on the event loop (measured: a fifth of a checkpoint's
 * commit time). Most seqs have one chunk (a write of at most 256 KiB spans at most five), so a
 * seq maps to its one value directly and to an inner map only once it has a second chunk.
 */
export class PairMap<V> {
  private readonly bySeq = new Map<number, Single<V> | Map<number, V>>()

  get (seq: number, chunk: number): V | undefined {
    const at = this.bySeq.get(seq)
    if (at === undefined) return undefined
    if (at instanceof Map) return at.get(chunk)
    return at.chunk === chunk ? at.value : undefined
  }

  set (seq: number, chunk: number, value: V): void {
    const at = this.bySeq.get(seq)
    if (at === undefined) this.bySeq.set(seq, { chunk, value })
    else if (at instanceof Map) at.set(chunk, value)
    else if (at.chunk === chunk) at.value = value
    else this.bySeq.set(seq, new Map([[at.chunk, at.value], [chunk, value]]))
  }
}

interface Single<V> { chunk: number, value: V }
