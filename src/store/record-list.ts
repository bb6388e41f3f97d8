/**
 * A growing list of fixed-width numeric records (a block version: block, seq, position, crc;
 * a version to delete: block, seq), kept in chunks of CHUNK_NUMBERS doubles.
 *
 * Why not a number[]: a plain array of a million doubles is one 8 MiB large object that is
 * copied into a 1.5x bigger one each time it fills, and the old copies stay resident until a
 * full GC; a compaction after a long sequential run hands a million dead versions to the index
 * batch, and those copies made the daemon's peak memory. Chunks are never copied: the list
 * costs what it holds plus at most one partly filled chunk, and a list handed to another
 * (`takeAll`) moves its chunks, not its numbers.
 */

/** 64 KiB a chunk: small enough to come from malloc's arenas, big enough that few are needed. */
const CHUNK_NUMBERS = 8192

interface Chunk { numbers: Float64Array, used: number }

export class RecordList {
  private readonly chunks: Chunk[] = []
  /** Records held. */
  private records = 0

  constructor (readonly width: number) {
    if (!Number.isInteger(width) || width < 1 || CHUNK_NUMBERS % width !== 0) throw new Error(`record width ${width} must divide ${CHUNK_NUMBERS}`)
  }

  get length (): number {
    return this.records
  }

  /** The chunk with room for one more record (a new one when the last is full). */
  private room (): Chunk {
    const last = this.chunks[this.chunks.length - 1]
    if (last !== undefined && last.used + this.width <= CHUNK_NUMBERS) return last
    const chunk = { numbers: new Float64Array(CHUNK_NUMBERS), used: 0 }
    this.chunks.push(chunk)
    return chunk
  }

  push1 (a: number): void {
    const c = this.room()
    c.numbers[c.used++] = a
    this.records++
  }

  push2 (a: number, b: number): void {
    const c = this.room()
    c.numbers[c.used] = a
    c.numbers[c.used + 1] = b
    c.used += 2
    this.records++
  }

  push4 (a: number, b: number, c: number, d: number): void {
    const k = this.room()
    k.numbers[k.used] = a
    k.numbers[k.used + 1] = b
    k.numbers[k.used + 2] = c
    k.numbers[k.used + 3] = d
    k.used += 4
    this.records++
  }

  /**
   * The records, as views of the chunks in order, `width` numbers per record; a caller may
   * await between views (a LevelDB write per so many operations).
   */
  views (): Float64Array[] {
    return this.chunks.map(c => c.numbers.subarray(0, c.used))
  }

  /** Appends every record of `other` (same width) by moving its chunks, not copying them; `other` is left empty. */
  takeAll (other: RecordList): void {
    if (other.width !== this.width) throw new Error(`record widths differ: ${other.width} and ${this.width}`)
    for (const c of other.chunks) this.chunks.push(c)
    this.records += other.records
    other.chunks.length = 0
    other.records = 0
  }

  /** The views, as views() gives them, and the list left empty: the caller drops each chunk once done with it. */
  takeViews (): Float64Array[] {
    const views = this.views()
    this.chunks.length = 0
    this.records = 0
    return views
  }

  /** Every number, in order (tests). */
  toArray (): number[] {
    const out: number[] = []
    for (const v of this.views()) for (const n of v) out.push(n)
    return out
  }
}
