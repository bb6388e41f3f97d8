import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { LogdiskError } from '../errors'
import { DirTarget } from './dir'
import { resolveS3Settings, S3Target, type S3Settings } from './s3'
import type { ArchiveFaults, ArchiveTarget, TargetRole } from './target'

// The factory of archive targets. It lives apart from the ArchiveTarget interface
// (target.ts) so that the backends, which implement the interface, and the factory, which
// builds them, never import each other in a circle.

/** Options a store's config supplies with its target string. */
export interface TargetOptions {
  /** S3 endpoint, region, credentials, timeouts: win over the AWS environment variables. */
  s3?: S3Settings
  /** Test-only fault injection (see ArchiveFaults). */
  faults?: ArchiveFaults
  /** S3: the emulated putIfAbsent's wait (S3TargetOptions.settleMs). */
  settleMs?: number
  /**
   * What the target is to the store, for messages: its archive (the default) or its replica
   * (replicate.target, create --from). A replica's lease refusal said "archive directory".
   */
  role?: TargetRole
}

const BUCKET_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$/
const S3_PREFIX_RE = /^[A-Za-z0-9._\-/]*$/

/**
 * The ArchiveTarget a `--target` string names:
 *   /abs/dir               a directory (it must exist)
 *   file:///abs/dir        the same, as a URL
 *   s3://bucket[/prefix]   an S3-compatible bucket; endpoint, region and credentials from
 *                          `options.s3`, else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, AWS_REGION,
 *                          AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN in `env`
 * Anything else throws BAD_ARGUMENT saying which forms are accepted. Nothing is contacted here:
 * an unreachable target fails (IO) on its first operation.
 */
/** A URL-like spec (`s3://...`, `file://...`): not a directory path. */
const SCHEME_RE = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//

/**
 * `spec` with a directory path resolved against the working directory (a command line's
 * paths may be relative; a target is recorded absolute); a URL-like spec as it is.
 */
export function absoluteTargetSpec (spec: string): string {
  return SCHEME_RE.test(spec) ? spec : path.resolve(spec)
}

export function parseTarget (spec: string, env: NodeJS.ProcessEnv = process.env, options: TargetOptions = {}): ArchiveTarget {
  const forms = 'use /abs/dir, file:///abs/dir or s3://bucket/prefix'
  const role = options.role ?? 'archive'
  if (typeof spec !== 'string' || spec.trim() === '') {
    throw new LogdiskError('BAD_ARGUMENT', `empty ${role} target: ${forms}`)
  }
  if (spec.startsWith('file:')) {
    let dir: string
    try {
      dir = fileURLToPath(spec)
    } catch (err) {
      throw new LogdiskError('BAD_ARGUMENT', `${role} target ${spec}: not a local file URL (${(err as Error).message}): ${forms}`, err)
    }
    return new DirTarget(dir, { faults: options.faults, role })
  }
  if (spec.startsWith('s3://')) {
    const rest = spec.slice('s3://'.length)
    if (/[?#]/.test(rest)) throw new LogdiskError('BAD_ARGUMENT', `${role} target ${spec}: query strings and fragments are not supported: ${forms}`)
    const slash = rest.indexOf('/')
    const bucket = slash === -1 ? rest : rest.slice(0, slash)
    const prefix = slash === -1 ? '' : rest.slice(slash + 1).replace(/^\/+|\/+$/g, '')
    if (!BUCKET_RE.test(bucket)) {
      throw new LogdiskError('BAD_ARGUMENT', `${role} target ${spec}: bucket name ${JSON.stringify(bucket)} is not 3-63 characters of letters, digits, . _ -`)
    }
    if (!S3_PREFIX_RE.test(prefix) || (prefix !== '' && prefix.split('/').some(part => part === '' || part === '.' || part === '..'))) {
      throw new LogdiskError('BAD_ARGUMENT', `${role} target ${spec}: prefix ${JSON.stringify(prefix)} must be /-separated parts of letters, digits, . _ - (no empty, . or .. parts)`)
    }
    const settings = resolveS3Settings(`${role} target ${spec}`, options.s3, env)
    return new S3Target(bucket, prefix, settings, { faults: options.faults, settleMs: options.settleMs, role })
  }
  if (SCHEME_RE.test(spec)) {
    throw new LogdiskError('BAD_ARGUMENT', `${role} target ${spec}: unsupported scheme: ${forms}`)
  }
  if (!path.isAbsolute(spec)) {
    throw new LogdiskError('BAD_ARGUMENT', `${role} target ${spec}: a directory target must be an absolute path: ${forms}`)
  }
  return new DirTarget(spec, { faults: options.faults, role })
}
