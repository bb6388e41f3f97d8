import path from 'node:path'
import { LogdiskError } from '../errors'
import type { FileHandle, FileLayer } from './file-layer'

/**
 * The file layer of a read-only open: files of the store and its pool volumes are only read;
 * any attempt to change one throws READ_ONLY (a bug, never a silent write). Only `scratchDir`
 * (the open's private temporary directory: fetched archive copies, the first segment of a
 * store that has none) may be written.
 */
export function readOnlyLayer (base: FileLayer, scratchDir: string): FileLayer {
  const inScratch = (file: string): boolean => {
    const rel = path.relative(scratchDir, path.resolve(file))
    return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel))
  }
  const refuse = (what: string, file: string): never => {
    throw new LogdiskError('READ_ONLY', `${what} ${file}: the store is open read-only`)
  }
  return {
    async open (file, create) {
      if (inScratch(file)) return base.open(file, create)
      if (create) refuse('create', file)
      try {
        return readOnlyHandle(await base.open(file, false), file)
      } catch (err) {
        const code = ((err as { cause?: NodeJS.ErrnoException }).cause)?.code
        if (code === 'EACCES' || code === 'EPERM') throw new LogdiskError('READ_ONLY', `cannot read ${file}: permission denied for this user`, err)
        throw err
      }
    },
    list: dir => base.list(dir),
    async remove (file) { if (!inScratch(file)) refuse('remove', file); return base.remove(file) },
    async rename (from, to) { if (!inScratch(from) || !inScratch(to)) refuse('rename', from); return base.rename(from, to) },
    async mkdirp (dir) { if (!inScratch(dir)) refuse('mkdir', dir); return base.mkdirp(dir) },
    syncDir: dir => inScratch(dir) ? base.syncDir(dir) : Promise.resolve(),
    async punchHole (file, offset, length) { if (!inScratch(file)) refuse('punch a hole in', file); return base.punchHole(file, offset, length) },
    ...(base.room ? { room: base.room } : {})
  }
}

function readOnlyHandle (h: FileHandle, file: string): FileHandle {
  const refuse = (what: string): Promise<never> => Promise.reject(new LogdiskError('READ_ONLY', `${what} ${file}: the store is open read-only`))
  return {
    read: (buf, bufOffset, length, position) => h.read(buf, bufOffset, length, position),
    writev: () => refuse('write'),
    datasync: () => Promise.resolve(), // nothing was written through this handle
    truncate: () => refuse('truncate'),
    size: () => h.size(),
    close: () => h.close()
  }
}
