import { LogdiskError } from '../errors'
import type { Store } from '../store'

/** Bytes read per chunk: large enough that a run of a segment is one system call. */
export const CHUNK_BYTES = 4 * 1024 * 1024
/** Chunks read ahead of the one the consumer is writing (bounds memory at DEPTH * CHUNK_BYTES). */
const DEPTH = 2

/**
 * Blocks [first, first+n) of an image at a cut, where each was (-1: never written by then),
 * and which are zeros the reader filled in without reading (Store.readBlocksAt).
 */
export interface ImageChunk {
  first: number
  n: number
  data: Buffer
  where: Float64Array
  zeros: Uint8Array
  /** The CRC32C each block with where >= 0 was checked against. */
  crcs: Uint32Array
}

/**
 * Blocks [first, first+count) of the image at cut `seq`, in chunks of CHUNK_BYTES, in block
 * order, read ahead: while the consumer writes one chunk the next ones are being read (each
 * read in its own read epoch, like any read of a snapshot image, so passes keep the rules of
 * pass-fence.ts). Once the last chunk is read it checks that the store still holds the point
 * (Store.pointHeld): if a snapshot was deleted and compacted, or the history horizon rose past
 * the point while the copy ran, a read may have found another point's version, and the copy
 * fails instead of returning it. A consumer must therefore reach the end before it commits
 * what it wrote. A chunk's `data` is valid until the consumer asks for the next chunk (its
 * buffer is then read into again).
 */
export async function * imageChunks (store: Store, seq: number, first: number, count: number, what: string): AsyncGenerator<ImageChunk> {
  const per = Math.max(1, Math.floor(CHUNK_BYTES / store.blockBytes))
  const end = first + count
  const queue: Array<Promise<ImageChunk>> = []
  // DEPTH chunks being read and one with the consumer: buffers taken in turn are reused, so
  // memory stays mapped (fresh large buffers cost a page fault per page, more than the copy).
  const buffers = Array.from({ length: DEPTH + 1 }, () => Buffer.allocUnsafe(Math.min(per, count) * store.blockBytes))
  let turn = 0
  let next = first
  const launch = (): void => {
    const f = next
    const n = Math.min(per, end - f)
    next += n
    const into = buffers[turn++ % buffers.length]
    const read = store.readBlocksAt(seq, f, n, into).then(r => ({ first: f, n, data: r.data, where: r.where, zeros: r.zeros, crcs: r.crcs }))
    read.catch(() => undefined) // awaited in turn below; an early failure must not go unhandled
    queue.push(read)
  }
  try {
    while (queue.length < DEPTH && next < end) launch()
    while (queue.length > 0) {
      const chunk = await queue.shift()!
      if (next < end) launch()
      yield chunk
    }
  } finally {
    // The consumer stopped early or a read failed: let the reads in flight finish first.
    await Promise.allSettled(queue)
  }
  if (!store.pointHeld(seq)) {
    throw new LogdiskError('NOT_FOUND', `${what} was given up while it was being copied (the snapshot deleted, or history compacted past it); nothing was written`)
  }
}

/** Whether the `B` bytes of `data` from `offset` are all zeros. */
export function isZeroBlock (data: Buffer, offset: number, B: number, zero: Buffer): boolean {
  return data.compare(zero, 0, B, offset, offset + B) === 0
}

/**
 * Items of `source` in order, with up to `depth` of them asked for ahead of the consumer, so
 * that reading the next ones overlaps with the consumer's work on this one (bounded memory:
 * `depth` items). An async generator queues the calls to next() and answers them in order.
 */
export async function * readAhead<T> (source: AsyncIterable<T>, depth: number): AsyncGenerator<T> {
  const it = source[Symbol.asyncIterator]()
  const queue: Array<Promise<IteratorResult<T>>> = []
  let done = false
  const ask = (): void => {
    const p = it.next()
    p.catch(() => undefined) // awaited in turn below
    queue.push(p)
  }
  try {
    for (let i = 0; i < depth; i++) ask()
    while (queue.length > 0) {
      const r = await queue.shift()!
      if (r.done === true) { done = true; break }
      ask()
      yield r.value
    }
  } finally {
    await Promise.allSettled(queue)
    if (!done) await it.return?.(undefined)
  }
}
