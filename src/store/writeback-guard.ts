import path from 'node:path'
import { LogdiskError } from '../errors'
import type { FileHandle, FileLayer } from './file-layer'

/**
 * The file layer of an open store, keeping every failed fdatasync. Linux reports a failed
 * write-back once and marks the pages clean (PostgreSQL's "fsyncgate",
 * https://wiki.postgresql.org/wiki/Fsync_Errors): the page cache still shows the new bytes
 * while the disk keeps the old ones, and a later fdatasync of the file, from any handle,
 * succeeds without writing them. So once one failed, every later fdatasync of that file
 * through this layer fails with the first error, whoever calls it (a flush, compaction's free
 * headers, a mirror's repair), until the file's pages are gone: it is truncated to nothing,
 * removed, or replaced by a rename. Kept per open of the store (the next open's recovery
 * writes again what no flush covered: recovery.ts).
 */
export class WritebackGuard {
  /** Files whose fdatasync failed, by resolved path, with the first error. */
  private readonly failures = new Map<string, unknown>()

  /** An fdatasync failed of a file still there (not removed, emptied or replaced since). */
  get failed (): boolean {
    return this.failures.size > 0
  }

  /** `base` with every fdatasync kept as above. */
  readonly layer: FileLayer

  constructor (private readonly base: FileLayer) {
    this.layer = this.wrap()
  }

  private wrap (): FileLayer {
    return {
      open: async (file, create) => this.guard(await this.base.open(file, create), path.resolve(file)),
      list: dir => this.base.list(dir),
      remove: async file => {
        await this.base.remove(file)
        this.failures.delete(path.resolve(file))
      },
      rename: async (from, to) => {
        await this.base.rename(from, to)
        const err = this.failures.get(path.resolve(from))
        this.failures.delete(path.resolve(from))
        if (err === undefined) this.failures.delete(path.resolve(to))
        else this.failures.set(path.resolve(to), err)
      },
      mkdirp: dir => this.base.mkdirp(dir),
      syncDir: dir => this.base.syncDir(dir),
      punchHole: (file, offset, length) => this.base.punchHole(file, offset, length),
      ...(this.base.punchHoles ? { punchHoles: (file: string, ranges: Array<[number, number]>) => this.base.punchHoles!(file, ranges) } : {}),
      ...(this.base.room ? { room: (dir: string) => this.base.room!(dir) } : {})
    }
  }

  private guard (h: FileHandle, file: string): FileHandle {
    // One name per handle: a rename moves the failure to the new name, and the store renames
    // only files it has closed (publishFile, a segment copy), so the name opened stays right.
    const datasync = async (): Promise<void> => {
      const earlier = this.failures.get(file)
      if (earlier !== undefined) {
        throw earlierFailure(file, earlier)
      }
      try {
        await h.datasync()
      } catch (err) {
        if (!this.failures.has(file)) this.failures.set(file, err)
        throw err
      }
      // One that ran beside this one and failed may have covered the same pages, and Linux
      // reports a write-back error to one fdatasync of an open file, not to each (seed
      // 16400056: the cut's failed, a flush's beside it succeeded): this one fails too.
      const meanwhile = this.failures.get(file)
      if (meanwhile !== undefined) throw new LogdiskError('IO', `fdatasync of ${file} failed beside this one (${(meanwhile as Error).message}); unmount and mount the store again`, meanwhile)
    }
    const truncate = async (length: number): Promise<void> => {
      await h.truncate(length)
      if (length === 0) this.failures.delete(file) // no page of it is left to be lost
    }
    return {
      read: (buf, bufOffset, length, position) => h.read(buf, bufOffset, length, position),
      ...(h.readNow ? { readNow: h.readNow.bind(h) } : {}),
      ...(h.readCached ? { readCached: h.readCached.bind(h) } : {}),
      ...(h.writevNow ? { writevNow: h.writevNow.bind(h) } : {}),
      // Not once a write-back of the file failed: its lost writes live on in the page cache
      // alone, and reads must keep seeing them until the store is opened again.
      ...(h.dropCache ? { dropCache: async () => { if (!this.failures.has(file)) await h.dropCache!() } } : {}),
      // Reading pages in drops none: a failed file's pages stay as they are.
      ...(h.warmCache ? { warmCache: h.warmCache } : {}),
      writev: (buffers, position) => h.writev(buffers, position),
      datasync,
      truncate,
      size: () => h.size(),
      close: () => h.close()
    }
  }
}

/**
 * The error of an fdatasync refused because an earlier one of `file` failed (`cause`): the
 * guard's, and Segment.sync's (which also keeps a failed fsync of the segment's directory).
 */
export function earlierFailure (file: string, cause: unknown): LogdiskError {
  return new LogdiskError('IO', `an earlier fdatasync of ${file} failed (${(cause as Error).message}): the kernel may have dropped those writes, so nothing written to it since can be made durable; unmount and mount the store again (its next open writes what no flush covered again)`, cause)
}
