/**
 * Archive (DESIGN.md F7): inactive segments are encoded (codec.ts), stored on backing storage
 * through the narrow ArchiveTarget interface (target.ts), then recycled. One module per
 * backend: dir.ts (a local directory), s3.ts (an S3-compatible bucket).
 */
export { type ArchiveFaults, type ArchiveTarget, type ExclusiveCreate } from './target'
export { parseTarget, type TargetOptions } from './parse-target'
export { isValidName, MAX_NAME_CHARS } from './names'
export {
  ARCHIVE_HEADER_BYTES,
  ARCHIVE_MAGIC,
  ArchiveCodec,
  DEFAULT_ARCHIVE_CODEC,
  decodeArchive,
  encodeArchive,
  readArchiveHeader,
  type ArchiveHeader
} from './codec'
export { DirTarget, type DirTargetOptions } from './dir'
export { resolveS3Settings, S3Target, SHA256_METADATA_KEY, type ResolvedS3Settings, type S3Settings, type S3TargetOptions } from './s3'
export {
  DEFAULT_LEASE_NAME,
  DEFAULT_LEASE_SKEW_MS,
  DEFAULT_LEASE_TTL_MS,
  describeHolder,
  FencedTarget,
  Lease,
  readLease,
  type LeaseHolder,
  type LeaseOptions,
  type LeaseRecord
} from './lease'
