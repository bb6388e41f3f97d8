/**
 * Where archived segments go: a flat namespace of named, immutable-once-published objects on
 * backing storage (a directory, an S3-compatible bucket). The store encodes a segment with
 * `encodeArchive` (codec.ts), `put`s it, and recycles the segment only after `put` resolved;
 * restores `get` it back and `decodeArchive` it, which checks the sha256 of the contents.
 *
 * The interface is narrow on purpose (litestream's ReplicaClient): every backend implements
 * exactly these methods, and test/archive-conformance.test.ts runs one suite against each.
 *
 * Names: 1 to 200 characters of [A-Za-z0-9._-], starting with a letter or digit, and never
 * containing ".tmp-" (that marks a backend's temporary objects, which no method ever returns).
 * Any other name is refused with BAD_ARGUMENT before anything is touched.
 *
 * Errors are LogdiskError with one of these codes, and one-line messages that name the target
 * (`describe()`) and say what to check:
 *   NOT_FOUND    `get` of a name that holds no object
 *   IO           the target is unreachable or refuses the operation: a directory that is
 *                missing, not a directory, read-only, full or unwritable; an S3 endpoint that
 *                does not answer (bounded by timeouts and a small retry count: never a hang),
 *                a bucket that does not exist, credentials that are refused
 *   CORRUPT      a checksum does not match: `put` read back something other than it wrote, or
 *                `get` found an object whose bytes do not match the checksum stored with it
 *   BAD_ARGUMENT a name outside the rules above; a target string `parseTarget` cannot read
 */
export interface ArchiveTarget {
  /**
   * Stores `data` under `name`, replacing any object of that name. Atomic: until the promise
   * resolves, readers see the old object (or none), never a partial one; if the process dies
   * or the call fails at any point, `name` still holds the old object or none, and at most a
   * temporary object (ignored by `list`/`has`/`get`) is left behind. After it resolves the
   * object is complete and durable under `name` and its checksum was verified by reading it
   * back from the target.
   */
  put (name: string, data: Buffer): Promise<void>

  /**
   * The bytes stored under `name`. Throws NOT_FOUND when there is none, CORRUPT when the
   * backend keeps a checksum with the object and the bytes do not match it. (A directory keeps
   * none: the archive format's own sha256, checked by `decodeArchive`, covers it end to end.)
   */
  get (name: string): Promise<Buffer>

  /**
   * Bytes [offset, offset + length) of the object under `name`, fewer when it ends sooner
   * (none past its end). Optional: a backend without it is read whole. Unlike `get`, no
   * checksum kept with the object is checked (it covers the whole object): the format's own
   * per-frame checksums do (LDARCH2, framed.ts). NOT_FOUND when there is no object.
   */
  getRange? (name: string, offset: number, length: number): Promise<Buffer>

  /** Whether an object is published under `name`. */
  has (name: string): Promise<boolean>

  /** Names of the published objects starting with `prefix` (all when empty), sorted. */
  list (prefix?: string): Promise<string[]>

  /** Removes the object under `name`; removing a name that holds nothing is not an error. */
  delete (name: string): Promise<void>

  /**
   * Stores `data` under `name` only if no object is published under that name: resolves true
   * when this call created it (complete, durable and verified, as `put`), false when an object
   * was already there (then nothing is changed). The one primitive the one-writer lease
   * (lease.ts) builds its compare-and-swap on. How strong it is, `exclusiveCreate` says.
   */
  putIfAbsent (name: string, data: Buffer): Promise<boolean>

  /**
   * How `putIfAbsent` is made on this target, probed once (S3) and then cached:
   *   atomic    the backend itself refuses the second creation (a directory: link(2), which
   *             fails with EEXIST; S3: PUT with If-None-Match: *, as AWS S3 since 2024, Ceph
   *             RGW and MinIO honour): of concurrent calls on one name exactly one resolves true
   *   emulated  the server ignores If-None-Match (s3rver, old gateways): HEAD, PUT, wait
   *             `settleMs`, GET and compare the bytes. Correct while every PUT completes within
   *             settleMs of its HEAD; a PUT delayed longer can make two callers both resolve
   *             true. The lease re-checks its record before every fenced write, so that ends at
   *             the next check. On a server that tears concurrent PUTs of one key (s3rver:
   *             bytes of one, metadata of another) all of them resolve false and the object
   *             reads as CORRUPT: the lease skips such records.
   */
  exclusiveCreate (): Promise<ExclusiveCreate>

  /** One line naming the target for messages, e.g. "directory /mnt/archive". No secrets. */
  describe (): string

  /** Releases connections (S3); the target is not used after. */
  close (): Promise<void>
}

/** See ArchiveTarget.exclusiveCreate. */
export type ExclusiveCreate = 'atomic' | 'emulated'

/** What a target is to the store, as its messages name it: backing storage or a replica. */
export type TargetRole = 'archive' | 'replica'

/**
 * Fault injection, for tests of the crash and damage paths (the pattern of litefs's labelled
 * faults and s3backer's test_io). Off unless a test sets it in a backend's options; the same
 * labels mean the same moment in every backend, so the conformance suite drives all of them.
 */
export interface ArchiveFaults {
  /**
   * `put` stops with IO "injected fault" right after the temporary object is complete (dir:
   * written and fsynced; S3: uploaded), before it is published: what a process killed halfway
   * through an upload leaves behind. The temporary object is deliberately not cleaned up.
   */
  failAfterTmpWrite?: boolean
  /**
   * `put` stores the data with one byte flipped in the temporary object (dir: flipped in the
   * file after writing; S3: flipped in the request body, as a bad network path would), so its
   * verification must catch it: `put` throws CORRUPT and publishes nothing.
   */
  corruptTmpWrite?: boolean
}

/**
 * parseTarget under the path it had before it moved to parse-target.ts (which imports the
 * targets, which import this file): the reproduction scripts of ../shared/repro require it
 * from here. Loaded at the call, so this file stays free of the cycle.
 */
export function parseTarget (...args: Parameters<typeof import('./parse-target').parseTarget>): ArchiveTarget {
  return (require('./parse-target') as typeof import('./parse-target')).parseTarget(...args)
}
