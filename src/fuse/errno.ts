import { LogdiskError, type ErrorCode } from '../errors'

/**
 * The one place where domain errors become errno values for the kernel (litefs's fuse.go
 * pattern). Values are Linux errno numbers, negated as fuse-native expects.
 */
const ERRNO: Record<ErrorCode, number> = {
  STORE_NOT_FOUND: 2, // ENOENT
  NOT_FOUND: 2, // ENOENT
  STORE_EXISTS: 17, // EEXIST
  STORE_LOCKED: 16, // EBUSY
  BUSY: 16, // EBUSY
  BAD_CONFIG: 5, // EIO
  BAD_ARGUMENT: 22, // EINVAL
  OUT_OF_RANGE: 27, // EFBIG: writes past the end of the image
  CORRUPT: 5, // EIO: a checksum failed; the data is not served
  NO_SPACE: 28, // ENOSPC
  READ_ONLY: 30, // EROFS
  CLOSED: 5, // EIO
  NOT_MOUNTED: 107, // ENOTCONN
  IO: 5, // EIO
  DAEMON_DIED: 107, // ENOTCONN (never raised below FUSE; listed for completeness)
  IDENTITY: 5, // EIO: a file that belongs to another store is not served
  LEASE_HELD: 16, // EBUSY
  FENCED: 30 // EROFS: this host may no longer write
}

export const Errno = { ENOENT: -2, EIO: -5, EBADF: -9, EACCES: -13, EBUSY: -16, EINVAL: -22, EFBIG: -27, ENOSPC: -28, EROFS: -30, EPERM: -1 } as const

/** Negative errno for any error thrown below the FUSE adapter. */
export function toErrno (err: unknown): number {
  if (err instanceof LogdiskError) return -ERRNO[err.code]
  return Errno.EIO
}
