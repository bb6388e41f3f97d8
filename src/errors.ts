/**
 * The one error type of logdisk. Every failure that a user or a client can act on is a
 * LogdiskError with a stable `code`; callers and tests branch on `code`, never on message text
 * (the pattern of Level's ModuleError). The FUSE adapter maps codes to errno in one place
 * (src/fuse/errno.ts) and the CLI prints `message` as its one-line error.
 */
export type ErrorCode =
  | 'STORE_NOT_FOUND' // the store directory or its config is missing
  | 'STORE_EXISTS' // create onto a directory that already holds a store
  | 'STORE_LOCKED' // another process (a mount or a CLI command) holds the store
  | 'BAD_CONFIG' // store.json unreadable or of an unknown format version
  | 'BAD_ARGUMENT' // caller error: a size that does not parse, an option out of range
  | 'OUT_OF_RANGE' // I/O past the end of the volume
  | 'CORRUPT' // a checksum does not match: the data is not served
  | 'NO_SPACE' // nowhere to append
  | 'READ_ONLY' // a write to something that is read-only
  | 'NOT_FOUND' // a named thing (snapshot, mount) does not exist
  | 'BUSY' // the thing is in use (an image still open by a loop device)
  | 'CLOSED' // the store was closed
  | 'NOT_MOUNTED' // no daemon answers for this store or mountpoint
  | 'IO' // the operating system refused an operation
  | 'DAEMON_DIED' // the mount daemon went away while it worked on a command's request
  | 'IDENTITY' // the store is a copy of another, store.json was edited, or a file belongs to another store
  | 'LEASE_HELD' // another host holds the one-writer lease of a replica (src/archive/lease.ts)
  | 'INTERRUPTED' // a command was interrupted (Ctrl-C) and stopped halfway, leaving nothing of its own
  | 'FENCED' // this host's lease was taken over: it may no longer write to the replica

export class LogdiskError extends Error {
  readonly code: ErrorCode
  override readonly cause?: unknown

  constructor (code: ErrorCode, message: string, cause?: unknown) {
    super(message)
    this.name = 'LogdiskError'
    this.code = code
    if (cause !== undefined) this.cause = cause
  }
}

export function isLogdiskError (err: unknown, code?: ErrorCode): err is LogdiskError {
  return err instanceof LogdiskError && (code === undefined || err.code === code)
}

/** An error of a filesystem with no room left (for the data, or this user's quota), as fromSystemError reports it. */
export function isFilesystemFull (err: unknown): boolean {
  const code = (err as { cause?: NodeJS.ErrnoException } | undefined)?.cause?.code
  return isLogdiskError(err, 'NO_SPACE') && (code === 'ENOSPC' || code === 'EDQUOT')
}

/** Wraps an operating system error (ENOSPC, EROFS, ...) so it keeps its meaning upstream. */
export function fromSystemError (err: unknown, what: string): LogdiskError {
  if (err instanceof LogdiskError) return err
  const sys = err as NodeJS.ErrnoException
  switch (sys?.code) {
    case 'ENOSPC': case 'EDQUOT':
      return new LogdiskError('NO_SPACE', `${what}: no space left on the device holding it`, err)
    case 'EROFS': case 'EACCES': case 'EPERM':
      return new LogdiskError('READ_ONLY', `${what}: not writable (${sys.code})`, err)
    case 'ENOENT':
      return new LogdiskError('NOT_FOUND', `${what}: missing (${sys.code})`, err)
    default:
      return new LogdiskError('IO', `${what}: ${sys?.message ?? String(err)}`, err)
  }
}
