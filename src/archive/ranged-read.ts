import { decodeFramedRange, framedHeaderBytes, isFramed, readFramedHeader, type FrameCache, type FramedHeader } from './framed'
import type { ArchiveTarget } from './target'

/** Header bytes fetched at first: a 64 MiB segment's table of 1 MiB frames fits (1 085 bytes). */
const FIRST_READ_BYTES = 4096
/** Headers kept (a few hundred bytes each); the oldest goes first. */
const MAX_HEADERS = 256
/** Decoded frames kept (1 MiB each), the least recently used goes: a cold 1 MiB read that arrives in 128 KiB requests fetches its frame once. */
const MAX_FRAMES = 8

/**
 * Ranges of the original bytes of archived objects, read through `ArchiveTarget.getRange`
 * (a cold read of a few blocks of a segment left on a replica: docs/REPLICATION.md "Range
 * fetch for cold reads"). Only LDARCH2 objects (framed.ts) can be read so; `read` answers
 * undefined for any other (LDARCH1, written before) and for a target without ranges: the
 * caller then fetches the object whole. Headers are kept per object name, bounded.
 */
export class RangedReader {
  private readonly headers = new Map<string, FramedHeader | null>()
  private readonly frames = new Map<string, Buffer>()

  constructor (private readonly target: () => ArchiveTarget) {}

  async read (name: string, offset: number, length: number): Promise<Buffer | undefined> {
    const t = this.target()
    if (!t.getRange) return undefined
    const h = await this.header(t, name)
    if (!h) return undefined
    return await decodeFramedRange(h, (at, n) => t.getRange!(name, at, n), offset, length, this.frameCache(name))
  }

  private frameCache (name: string): FrameCache {
    const key = (i: number): string => `${name}#${i}`
    return {
      get: i => {
        const data = this.frames.get(key(i))
        if (data) { this.frames.delete(key(i)); this.frames.set(key(i), data) }
        return data
      },
      set: (i, data) => {
        this.frames.set(key(i), data)
        if (this.frames.size > MAX_FRAMES) this.frames.delete(this.frames.keys().next().value!)
      }
    }
  }

  private async header (t: ArchiveTarget, name: string): Promise<FramedHeader | null> {
    const known = this.headers.get(name)
    if (known !== undefined) return known
    let head = await t.getRange!(name, 0, FIRST_READ_BYTES)
    let h: FramedHeader | null = null
    if (isFramed(head)) {
      const bytes = framedHeaderBytes(head)
      if (head.length < bytes) head = await t.getRange!(name, 0, bytes)
      h = readFramedHeader(head)
    }
    this.headers.set(name, h)
    if (this.headers.size > MAX_HEADERS) this.headers.delete(this.headers.keys().next().value!)
    return h
  }
}
