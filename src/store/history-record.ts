/**
 * A history record: the versions one log entry made of the blocks of one chunk of
 * CHUNK_BLOCKS blocks (keys.ts 'x'). A write entry makes one record per chunk it touches, so
 * a 1 MiB write is 4 LevelDB rows, not 256 (one per block, index layout 2): the checkpoint of
 * a sequential write cost 0.7 CPU-s per GiB written and stalled the event loop up to 170 ms
 * a commit in that layout (measured). An entry covers a contiguous range of blocks, so its
 * share of a chunk is one range too, and (chunk, seq) names it.
 *
 * The value is a list of runs, each [first u8, count u8, base f64, step f64, crc u32 x count]:
 * block `chunk * CHUNK_BLOCKS + first + i` is at `base + i * step` (step is the block size
 * for a written range, 0 for a trimmed one). Compaction moves and frees versions one at a
 * time, so a record may hold any subset of its blocks at any positions: runs split then.
 */
export const CHUNK_BLOCKS = 64

const RUN_HEADER_BYTES = 18

/** The versions of one record by offset in its chunk: a table reused from record to record. */
export class ChunkVersions {
  readonly has = new Uint8Array(CHUNK_BLOCKS)
  readonly positions = new Float64Array(CHUNK_BLOCKS)
  readonly crcs = new Uint32Array(CHUNK_BLOCKS)
  count = 0

  clear (): this {
    this.has.fill(0)
    this.count = 0
    return this
  }

  set (offset: number, position: number, crc: number): void {
    if (this.has[offset] === 0) { this.has[offset] = 1; this.count++ }
    this.positions[offset] = position
    this.crcs[offset] = crc
  }

  delete (offset: number): void {
    if (this.has[offset] === 1) { this.has[offset] = 0; this.count-- }
  }

  /** Replaces the table's contents with a record's. */
  decode (value: Buffer): this {
    this.clear()
    forEachVersion(value, (offset, position, crc) => this.set(offset, position, crc))
    return this
  }

  /** The record holding the table's versions; undefined when it holds none. */
  encode (): Buffer | undefined {
    if (this.count === 0) return undefined
    const runs: number[] = [] // first, count, step per run
    let bytes = 0
    for (let o = 0; o < CHUNK_BLOCKS;) {
      if (this.has[o] === 0) { o++; continue }
      const base = this.positions[o]
      const step = o + 1 < CHUNK_BLOCKS && this.has[o + 1] === 1 ? this.positions[o + 1] - base : 0
      let n = 1
      while (o + n < CHUNK_BLOCKS && this.has[o + n] === 1 && this.positions[o + n] === base + n * step) n++
      runs.push(o, n, step)
      bytes += RUN_HEADER_BYTES + 4 * n
      o += n
    }
    const out = Buffer.allocUnsafe(bytes)
    let at = 0
    for (let r = 0; r < runs.length; r += 3) {
      const [first, n, step] = [runs[r], runs[r + 1], runs[r + 2]]
      out[at] = first
      out[at + 1] = n
      out.writeDoubleLE(this.positions[first], at + 2)
      out.writeDoubleLE(step, at + 10)
      at += RUN_HEADER_BYTES
      for (let i = 0; i < n; i++, at += 4) out.writeUInt32LE(this.crcs[first + i], at)
    }
    return out
  }
}

/** Calls `fn` for every version a record holds, in offset order. */
export function forEachVersion (value: Buffer, fn: (offset: number, position: number, crc: number) => void): void {
  for (let at = 0; at < value.length;) {
    const first = value[at]
    const n = value[at + 1]
    const base = value.readDoubleLE(at + 2)
    const step = value.readDoubleLE(at + 10)
    at += RUN_HEADER_BYTES
    for (let i = 0; i < n; i++, at += 4) fn(first + i, base + i * step, value.readUInt32LE(at))
  }
}

/** The version of the block at `offset` a record holds, without decoding the rest. */
export function versionIn (value: Buffer, offset: number): { position: number, crc: number } | undefined {
  for (let at = 0; at < value.length;) {
    const first = value[at]
    const n = value[at + 1]
    if (offset >= first && offset < first + n) {
      const i = offset - first
      return { position: value.readDoubleLE(at + 2) + i * value.readDoubleLE(at + 10), crc: value.readUInt32LE(at + RUN_HEADER_BYTES + 4 * i) }
    }
    at += RUN_HEADER_BYTES + 4 * n
  }
  return undefined
}
