import crypto from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'
import { LogdiskError } from '../errors'
import { checkName, checkPrefix, isValidName, oneLine, TMP_MARK } from './names'
import type { ArchiveFaults, ArchiveTarget, ExclusiveCreate, TargetRole } from './target'

export interface DirTargetOptions {
  /** Test-only fault injection (see ArchiveFaults). */
  faults?: ArchiveFaults
  /** What the directory is to the store, for messages (default: archive). */
  role?: TargetRole
}

/**
 * An ArchiveTarget in a local directory (a second disk, an NFS or SMB mount): one file per
 * object, named as the object. The directory must exist; it is never created, so a backup disk
 * that is not mounted fails with IO instead of filling the directory it is mounted on.
 *
 * put: write `<name>.tmp-<random>` (exclusive create), fsync it, read it back and compare its
 * sha256 with the data's, rename it over `<name>`, fsync the directory (litestream's
 * file/replica_client.go). A crash before the rename leaves only the temporary file, which
 * list/has/get ignore; after the directory fsync the object survives power loss.
 */
export class DirTarget implements ArchiveTarget {
  readonly dir: string
  private readonly faults: ArchiveFaults
  private readonly role: TargetRole

  constructor (dir: string, options: DirTargetOptions = {}) {
    this.role = options.role ?? 'archive'
    if (!path.isAbsolute(dir)) throw new LogdiskError('BAD_ARGUMENT', `${this.role} directory ${dir} must be an absolute path`)
    this.dir = path.resolve(dir)
    this.faults = options.faults ?? {}
  }

  describe (): string {
    return `${this.role} directory ${this.dir}`
  }

  async put (name: string, data: Buffer): Promise<void> {
    checkName(this, name)
    const final = path.join(this.dir, name)
    const tmp = `${final}${TMP_MARK}${crypto.randomBytes(6).toString('hex')}`
    const want = sha256(data)
    let published = false
    try {
      await this.writeSynced(tmp, data)
      if (this.faults.corruptTmpWrite === true) await flipByte(tmp, data.length)
      if (this.faults.failAfterTmpWrite === true) {
        published = true // a crash leaves the temporary file: so does the fault
        throw new LogdiskError('IO', `${this.describe()}: injected fault failAfterTmpWrite: stopped before publishing ${name}`)
      }
      const back = await fs.readFile(tmp)
      const got = sha256(back)
      if (back.length !== data.length || !got.equals(want)) {
        throw new LogdiskError('CORRUPT', `${this.describe()}: ${path.basename(tmp)} read back ${back.length} bytes with sha256 ` +
          `${got.toString('hex').slice(0, 16)}..., wrote ${data.length} with ${want.toString('hex').slice(0, 16)}...: check the disk`)
      }
      await fs.rename(tmp, final)
      published = true
      await this.syncDir()
    } catch (err) {
      if (!published) await fs.rm(tmp, { force: true }).catch(() => undefined)
      throw await this.error(err, `put ${name}`)
    }
  }

  /**
   * The temporary file is written, fsynced and verified as in `put`, then hard-linked to
   * `<name>`: link(2) fails with EEXIST when the name exists, atomically, on local file systems
   * and NFS alike. (NFS may answer a retransmitted link with EEXIST although it succeeded: then
   * the temporary file has two links, and that counts as created.)
   */
  async putIfAbsent (name: string, data: Buffer): Promise<boolean> {
    checkName(this, name)
    const final = path.join(this.dir, name)
    const tmp = `${final}${TMP_MARK}${crypto.randomBytes(6).toString('hex')}`
    try {
      await this.writeSynced(tmp, data)
      const back = await fs.readFile(tmp)
      if (!sha256(back).equals(sha256(data))) {
        throw new LogdiskError('CORRUPT', `${this.describe()}: ${path.basename(tmp)} read back other bytes than were written: check the disk`)
      }
      let created = true
      try {
        await fs.link(tmp, final)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
        created = (await fs.stat(tmp)).nlink === 2
      }
      await fs.unlink(tmp)
      if (created) await this.syncDir()
      return created
    } catch (err) {
      await fs.rm(tmp, { force: true }).catch(() => undefined)
      throw await this.error(err, `put ${name} (if absent)`)
    }
  }

  async exclusiveCreate (): Promise<ExclusiveCreate> {
    return 'atomic'
  }

  async get (name: string): Promise<Buffer> {
    checkName(this, name)
    try {
      return await fs.readFile(path.join(this.dir, name))
    } catch (err) {
      throw await this.error(err, `get ${name}`, name)
    }
  }

  async getRange (name: string, offset: number, length: number): Promise<Buffer> {
    checkName(this, name)
    let h
    try {
      h = await fs.open(path.join(this.dir, name), 'r')
    } catch (err) {
      throw await this.error(err, `get ${name}`, name)
    }
    try {
      const buf = Buffer.alloc(length)
      let got = 0
      while (got < length) {
        const { bytesRead } = await h.read(buf, got, length - got, offset + got)
        if (bytesRead === 0) break
        got += bytesRead
      }
      return buf.subarray(0, got)
    } catch (err) {
      throw await this.error(err, `get ${name}`, name)
    } finally {
      await h.close()
    }
  }

  async has (name: string): Promise<boolean> {
    checkName(this, name)
    try {
      return (await fs.stat(path.join(this.dir, name))).isFile()
    } catch (err) {
      const e = await this.error(err, `has ${name}`, name)
      if (e.code === 'NOT_FOUND') return false
      throw e
    }
  }

  async list (prefix = ''): Promise<string[]> {
    checkPrefix(this, prefix)
    let entries
    try {
      entries = await fs.readdir(this.dir, { withFileTypes: true })
    } catch (err) {
      throw await this.error(err, 'list')
    }
    return entries
      .filter(e => e.isFile() && e.name.startsWith(prefix) && isValidName(e.name))
      .map(e => e.name)
      .sort()
  }

  async delete (name: string): Promise<void> {
    checkName(this, name)
    try {
      await fs.unlink(path.join(this.dir, name))
      await this.syncDir()
    } catch (err) {
      const e = await this.error(err, `delete ${name}`, name)
      if (e.code !== 'NOT_FOUND') throw e
    }
  }

  async close (): Promise<void> {}

  private async writeSynced (file: string, data: Buffer): Promise<void> {
    const handle = await fs.open(file, 'wx', 0o644)
    try {
      let done = 0
      while (done < data.length) {
        const { bytesWritten } = await handle.write(data, done, data.length - done, done)
        done += bytesWritten
      }
      await handle.sync()
    } finally {
      await handle.close()
    }
  }

  private async syncDir (): Promise<void> {
    const handle = await fs.open(this.dir, 'r')
    try {
      await handle.sync()
    } finally {
      await handle.close()
    }
  }

  /**
   * Maps a failure to the contract's codes. ENOENT means NOT_FOUND only when `name` is given
   * and the directory itself is there; a missing or unusable directory is IO.
   */
  private async error (err: unknown, op: string, name?: string): Promise<LogdiskError> {
    if (err instanceof LogdiskError) return err
    const sys = err as NodeJS.ErrnoException
    const what = `${this.describe()}: ${op}`
    const dirProblem = await this.dirProblem()
    if (dirProblem !== undefined) return new LogdiskError('IO', `${this.describe()}: ${dirProblem}`, err)
    switch (sys?.code) {
      case 'ENOENT':
        if (name !== undefined) return new LogdiskError('NOT_FOUND', `${this.describe()}: no archived object ${name}`, err)
        break
      case 'EISDIR':
        if (name !== undefined) return new LogdiskError('NOT_FOUND', `${this.describe()}: ${name} is a directory, not an archived object`, err)
        break
      case 'EROFS':
        return new LogdiskError('IO', `${what}: the file system is read-only (EROFS): remount it read-write or choose another --target`, err)
      case 'EACCES': case 'EPERM':
        return new LogdiskError('IO', `${what}: permission denied (${sys.code}): check the directory's owner and mode`, err)
      case 'ENOSPC': case 'EDQUOT':
        return new LogdiskError('IO', `${what}: no space left (${sys.code}): free space on the target or choose another`, err)
    }
    return new LogdiskError('IO', `${what}: ${oneLine(sys?.message ?? String(err))}`, err)
  }

  /** Why the directory itself is unusable, or undefined when it is a directory. */
  private async dirProblem (): Promise<string | undefined> {
    try {
      const stat = await fs.stat(this.dir)
      return stat.isDirectory() ? undefined : 'is not a directory: check --target'
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT') return 'is missing: check that it exists and that its disk is mounted (create it with mkdir -p for a new target)'
      if (code === 'ENOTDIR') return 'is not a directory (a path component is a file): check --target'
      return `cannot be reached (${code ?? String(err)}): check that it exists and is accessible`
    }
  }
}

function sha256 (data: Uint8Array): Buffer {
  return crypto.createHash('sha256').update(data).digest()
}

/** Fault injection: flips one byte in the middle of `file` (of `length` bytes). */
async function flipByte (file: string, length: number): Promise<void> {
  if (length === 0) {
    await fs.appendFile(file, Buffer.from([0xff]))
    return
  }
  const handle = await fs.open(file, 'r+')
  try {
    const at = Math.floor(length / 2)
    const b = Buffer.alloc(1)
    await handle.read(b, 0, 1, at)
    b[0] ^= 0xff
    await handle.write(b, 0, 1, at)
  } finally {
    await handle.close()
  }
}
