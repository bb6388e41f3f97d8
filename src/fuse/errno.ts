import { LogdiskError, type ErrorCode } from '../errors'

/**
 * The one place where domain errors become errno values for the kernel (litefs's fuse.go
 * pattern), for every transport: fuse-native takes them as callback results, the /dev/fuse
 * server puts them in the `error` field of `fuse_out_header`. Both want Linux errno values,
 * negated.
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
  INTERRUPTED: 4, // EINTR (never raised below FUSE; listed for completeness)
  FENCED: 30 // EROFS: this host may no longer write
}

/** Linux errno values, negated (the sign both transports send to the kernel). */
export const Errno = {
  EPERM: -1,
  ENOENT: -2,
  EINTR: -4,
  EIO: -5,
  EBADF: -9,
  EAGAIN: -11,
  EACCES: -13,
  EBUSY: -16,
  ENODEV: -19,
  ENOTDIR: -20,
  EISDIR: -21,
  EINVAL: -22,
  EFBIG: -27,
  ENOSPC: -28,
  EROFS: -30,
  ENOSYS: -38,
  EOPNOTSUPP: -95
} as const

/**
 * An answer for the kernel that is not a domain error: "no such image", "read-only image",
 * "mode not supported". Thrown by the image operations; `errno` is negative.
 */
export class FsError extends Error {
  constructor (readonly errno: number, message = `errno ${-errno}`) {
    super(message)
    this.name = 'FsError'
  }
}

/** Negative errno for any error thrown below the FUSE transports. */
export function toErrno (err: unknown): number {
  if (err instanceof FsError) return err.errno
  if (err instanceof LogdiskError) return -ERRNO[err.code]
  return Errno.EIO
}

/**
 * A short name for an error answered below FUSE, for counting (metrics' errors by code): the
 * LogdiskError code (`NO_SPACE`, `CORRUPT`, ...), else the errno's name (`EROFS`, `EPERM`).
 */
export function errorCode (err: unknown): string {
  if (err instanceof LogdiskError) return err.code
  const errno = toErrno(err)
  return (Object.entries(Errno) as Array<[string, number]>).find(([, n]) => n === errno)?.[0] ?? `E${-errno}`
}
