import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError } from '../errors'

/**
 * A private, writable view of a store's LevelDB index, for read-only opens.
 *
 * LevelDB has no read-only mode: opening a database always writes (a new MANIFEST and log,
 * the replayed log flushed to a table, the LOG file rotated), which fails on a directory the
 * user cannot write or a full disk, and changes the store's bytes even when it succeeds. So a
 * read-only open builds a directory elsewhere that LevelDB can own:
 *
 *   CURRENT, the MANIFEST, the live log files   copied (small; LevelDB rewrites or drops them)
 *   every live table file (.ldb/.sst)           symlinked (immutable; LevelDB only reads them)
 *   LOCK                                        symlinked to the store's LOCK when the user may
 *                                               open it for writing: LevelDB then takes the
 *                                               store's own lock through it (exclusion as usual;
 *                                               no byte of the file changes); otherwise a fresh
 *                                               LOCK, after /proc/locks showed no holder
 *
 * Live files come from the MANIFEST, so LevelDB never creates a file under the name of a
 * symlink (new files get numbers past every live one): nothing is ever written through a link.
 */
export interface IndexView {
  dir: string
  /** The store's own lock is taken through the view (else only checked free at open). */
  locked: boolean
}

export function makeIndexView (indexDir: string, viewDir: string): IndexView {
  fs.mkdirSync(viewDir, { recursive: true })
  if (!fs.existsSync(indexDir)) return { dir: viewDir, locked: false }
  const lock = path.join(indexDir, 'LOCK')
  let locked = false
  // Held (a mounted store, a command running): say so before copying anything.
  if (fs.existsSync(lock) && lockHeld(lock)) {
    throw new LogdiskError('STORE_LOCKED', 'store is in use by another process (mounted, or a command is running on it)')
  }
  if (fs.existsSync(lock)) {
    let writable = true
    try { fs.accessSync(lock, fs.constants.W_OK) } catch { writable = false }
    if (writable) {
      fs.symlinkSync(lock, path.join(viewDir, 'LOCK'))
      locked = true
    } else if (lockHeld(lock)) {
      throw new LogdiskError('STORE_LOCKED', 'store is in use by another process (mounted, or a command is running on it)')
    }
  }
  let names: string[]
  try {
    names = fs.readdirSync(indexDir)
  } catch (err) {
    throw new LogdiskError('READ_ONLY', `cannot read the index at ${indexDir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, err)
  }
  let live: ReturnType<typeof liveFiles> | undefined
  try {
    live = liveFiles(indexDir)
  } catch {
    live = undefined // unreadable MANIFEST: copy everything, LevelDB will say what is wrong
  }
  for (const name of names) {
    if (name === 'LOCK' || name === 'LOG' || name === 'LOG.old') continue
    const from = path.join(indexDir, name)
    const to = path.join(viewDir, name)
    const m = /^(\d+)\.(ldb|sst|log)$/.exec(name)
    try {
      if (!live) {
        fs.copyFileSync(from, to)
      } else if (m && (m[2] === 'ldb' || m[2] === 'sst')) {
        if (live.tables.has(Number(m[1]))) fs.symlinkSync(from, to)
      } else if (m) {
        if (Number(m[1]) >= live.logNumber || Number(m[1]) === live.prevLogNumber) fs.copyFileSync(from, to)
      } else if (name === 'CURRENT' || name === live.manifest) {
        fs.copyFileSync(from, to)
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      // A file the MANIFEST named went while it was copied: a command that writes took the
      // store's lock after the check above and LevelDB compacted. That is a store in use (its
      // callers wait and try again), not an I/O error (a read-only command failed with ENOENT
      // right after a kill -9, while offline commands took turns: a hostile test, helper-58).
      if (code === 'ENOENT') throw new LogdiskError('STORE_LOCKED', `store is in use by another process (its index changed while it was read: ${name} went)`, err)
      throw new LogdiskError(code === 'ENOSPC' ? 'NO_SPACE' : 'IO', `cannot make a private view of the index ${indexDir} in ${viewDir}: ${code ?? (err as Error).message}`, err)
    }
  }
  return { dir: viewDir, locked }
}

/** Whether /proc/locks lists a lock on `file` (Linux; elsewhere: false). */
function lockHeld (file: string): boolean {
  let text: string
  try { text = fs.readFileSync('/proc/locks', 'utf8') } catch { return false }
  const st = fs.statSync(file)
  const major = ((st.dev >>> 8) & 0xfff)
  const minor = (st.dev & 0xff) | ((st.dev >>> 12) & 0xfff00)
  for (const line of text.split('\n')) {
    const m = /\s([0-9a-f]+):([0-9a-f]+):(\d+)\s/.exec(line)
    if (m && parseInt(m[1], 16) === major && parseInt(m[2], 16) === minor && Number(m[3]) === st.ino) return true
  }
  return false
}

/** What the MANIFEST that CURRENT names says is live. */
export function liveFiles (indexDir: string): { manifest: string, tables: Set<number>, logNumber: number, prevLogNumber: number } {
  const manifest = fs.readFileSync(path.join(indexDir, 'CURRENT'), 'utf8').trim()
  if (!/^MANIFEST-\d+$/.test(manifest)) throw new Error(`CURRENT names ${manifest}`)
  const tables = new Set<number>()
  let logNumber = 0
  let prevLogNumber = 0
  for (const edit of logRecords(fs.readFileSync(path.join(indexDir, manifest)))) {
    let at = 0
    const varint = (): number => {
      let n = 0
      let mul = 1
      while (true) {
        if (at >= edit.length) throw new Error('truncated varint')
        const b = edit[at++]
        n += (b & 0x7f) * mul
        if (b < 0x80) return n
        mul *= 128
      }
    }
    const slice = (): void => { const n = varint(); at += n }
    while (at < edit.length) {
      const tag = varint()
      switch (tag) {
        case 1: slice(); break // comparator
        case 2: logNumber = varint(); break
        case 3: varint(); break // next file number
        case 4: varint(); break // last sequence
        case 5: varint(); slice(); break // compact pointer: level, key
        case 6: varint(); tables.delete(varint()); break // deleted file: level, number
        case 7: { varint(); const n = varint(); varint(); slice(); slice(); tables.add(n); break } // new file: level, number, size, smallest, largest
        case 9: prevLogNumber = varint(); break
        default: throw new Error(`unknown MANIFEST tag ${tag}`)
      }
    }
  }
  return { manifest, tables, logNumber, prevLogNumber }
}

/** The records of a LevelDB log-format file (32 KiB blocks, fragments FULL/FIRST/MIDDLE/LAST). */
function * logRecords (buf: Buffer): Generator<Buffer> {
  const BLOCK = 32768
  let at = 0
  let parts: Buffer[] = []
  while (at + 7 <= buf.length) {
    const left = BLOCK - (at % BLOCK)
    if (left < 7) { at += left; continue }
    const length = buf.readUInt16LE(at + 4)
    const type = buf[at + 6]
    if (type === 0) { at += left; continue } // zero padding: the rest of the block is empty
    const data = buf.subarray(at + 7, at + 7 + length)
    at += 7 + length
    if (type === 1) yield data
    else if (type === 2) parts = [data]
    else if (type === 3) parts.push(data)
    else if (type === 4) { parts.push(data); yield Buffer.concat(parts); parts = [] }
  }
}
