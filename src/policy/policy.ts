import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError } from '../errors'
import { writeFileAtomic } from '../store/config'
import type { VolumeIdPolicy } from '../store'

/**
 * Policies are validated data with defaults (after litestream's compaction levels), stored
 * with the store in policy.json and applied by whoever acts: the CLI, or the mount daemon.
 * Each key says what values it takes; `policy show` prints every key with its value.
 */
interface KeySpec<T> {
  values: string
  parse (text: string): T | undefined
  default: T
}

const positiveInt: (d: number) => KeySpec<number> = d => ({
  values: 'a positive integer',
  parse: t => /^\d+$/.test(t) && Number(t) > 0 && Number.isSafeInteger(Number(t)) ? Number(t) : undefined,
  default: d
})
const bool: (d: boolean) => KeySpec<boolean> = d => ({
  values: 'true|false',
  parse: t => t === 'true' ? true : t === 'false' ? false : undefined,
  default: d
})
const oneOf = <T extends string>(options: T[], d: T): KeySpec<T> => ({
  values: options.join('|'),
  parse: t => (options as string[]).includes(t) ? t as T : undefined,
  default: d
})

const fraction: (d: number) => KeySpec<number> = d => ({
  values: 'a number between 0 and 1',
  parse: t => /^(0(\.\d+)?|1(\.0+)?)$/.test(t) ? Number(t) : undefined,
  default: d
})
const oneOfNumbers = (options: number[], d: number): KeySpec<number> => ({
  values: options.join('|'),
  parse: t => options.includes(Number(t)) && /^\d+$/.test(t) ? Number(t) : undefined,
  default: d
})

/** "15m", "1h", "7d", "30s" or "0" (off), in milliseconds. */
export function parseDuration (text: string): number | undefined {
  const m = /^(\d+)(ms|s|m|h|d)?$/.exec(text.trim())
  if (!m) return undefined
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h' | 'd']
  return Number(m[1]) * unit
}
const duration: (d: string) => KeySpec<string> = d => ({
  values: 'a duration like 30s, 15m, 1h, 7d, or 0 for off',
  parse: t => parseDuration(t) === undefined ? undefined : t,
  default: d
})
/** history.keep: a duration, 0 (free all history compaction can), or forever. */
const historyWindow: KeySpec<string> = {
  values: 'a duration like 24h or 7d, 0 to keep only snapshots, or forever',
  parse: t => t === 'forever' || parseDuration(t) !== undefined ? t : undefined,
  default: '24h'
}

/** history.keep in milliseconds (Infinity for forever). */
export function historyKeepMs (p: Policy): number {
  return p['history.keep'] === 'forever' ? Infinity : parseDuration(p['history.keep']) ?? 0
}

const archiveTarget: KeySpec<string> = {
  values: 'empty (no archive), an absolute directory, file:///dir or s3://bucket/prefix',
  parse: t => t === '' || t.startsWith('/') || t.startsWith('file:///') || /^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?$/.test(t) ? t : undefined,
  default: ''
}
const replicaTarget: KeySpec<string> = { ...archiveTarget, values: 'empty (no replication), an absolute directory, file:///dir or s3://bucket/prefix' }
const interval: (d: string) => KeySpec<string> = d => ({
  values: 'a duration above 0, like 1s or 500ms',
  parse: t => (parseDuration(t) ?? 0) > 0 ? t : undefined,
  default: d
})
const count: (d: number) => KeySpec<number> = d => ({
  values: 'a whole number, 0 for no limit',
  parse: t => /^\d+$/.test(t) && Number.isSafeInteger(Number(t)) ? Number(t) : undefined,
  default: d
})

export const POLICY_KEYS = {
  'snapshot.every': duration('0'),
  'snapshot.keep': count(0),
  'baseline.olderThan': duration('0'),
  'on.sync': oneOf(['none', 'snapshot'], 'none'),
  'on.unmount': oneOf(['none', 'snapshot'], 'none'),
  'on.snapshot': oneOf(['none', 'compact'], 'none'),
  'compact.every': duration('10m'),
  'compact.at': fraction(0.8),
  'history.keep': historyWindow,
  'compact.cleanBelow': fraction(0.5),
  'archive.target': archiveTarget,
  'archive.after': duration('0'),
  'segments.workingSet': count(0),
  'replicate.target': replicaTarget,
  'replicate.interval': interval('1s'),
  'replicate.lagWarn': duration('30s'),
  'replicate.indexEvery': count(4),
  'pool.growAt': fraction(0.95),
  'pool.shrinkAt': fraction(0.5),
  'pool.mode': oneOf(['auto', 'ask'], 'auto'),
  mirror: oneOfNumbers([1, 2], 1),
  volumeId: oneOf(['sequential', 'explicit', 'constant'], 'sequential'),
  'volumeId.constant': positiveInt(1),
  'volumeId.reuse': bool(true)
}

export type PolicyKey = keyof typeof POLICY_KEYS
export type Policy = { [K in PolicyKey]: typeof POLICY_KEYS[K]['default'] }

export const POLICY_FILE = 'policy.json'

export function defaultPolicy (): Policy {
  const out: Record<string, unknown> = {}
  for (const [k, spec] of Object.entries(POLICY_KEYS)) out[k] = spec.default
  return out as Policy
}

export function readPolicy (storeDir: string): Policy {
  const file = path.join(storeDir, POLICY_FILE)
  if (!fs.existsSync(file)) return defaultPolicy()
  let stored: Record<string, unknown>
  try {
    stored = JSON.parse(fs.readFileSync(file, 'utf8'))
  } catch (err) {
    throw new LogdiskError('BAD_CONFIG', `${file} is not valid JSON; fix it or remove it to get the defaults`, err)
  }
  if (typeof stored !== 'object' || stored === null || Array.isArray(stored)) {
    throw new LogdiskError('BAD_CONFIG', `${file} is not a JSON object; fix it or remove it to get the defaults`)
  }
  // Known keys only: a key this logdisk does not know (a typo in a hand edit, or a newer
  // release's) would otherwise ride along unread and be written back by every `policy set`
  // (helper-64). unknownPolicyKeys names them, so that `policy show` and `set` can say so.
  const policy: Record<string, unknown> = defaultPolicy()
  for (const key of Object.keys(POLICY_KEYS)) if (Object.hasOwn(stored, key)) policy[key] = stored[key]
  // Hand-edited values are held to what `policy set` accepts; the store trusts them.
  for (const [key, spec] of Object.entries(POLICY_KEYS) as Array<[string, KeySpec<unknown>]>) {
    if (spec.parse(String(policy[key])) !== policy[key]) {
      throw new LogdiskError('BAD_CONFIG', `${file}: ${key} is ${JSON.stringify(policy[key])} but takes ${spec.values}; fix it or remove it to get the defaults`)
    }
  }
  return policy as Policy
}

/** Keys in policy.json that no policy has (readPolicy leaves them out); none without the file. */
export function unknownPolicyKeys (storeDir: string): string[] {
  let stored: unknown
  try {
    stored = JSON.parse(fs.readFileSync(path.join(storeDir, POLICY_FILE), 'utf8'))
  } catch {
    return [] // no file, or one readPolicy refuses with its own message
  }
  if (typeof stored !== 'object' || stored === null || Array.isArray(stored)) return []
  return Object.keys(stored).filter(k => !Object.hasOwn(POLICY_KEYS, k))
}

/** Checks rules between keys. */
function checkTogether (p: Record<string, unknown>): void {
  if ((p['pool.shrinkAt'] as number) >= (p['pool.growAt'] as number)) {
    throw new LogdiskError('BAD_ARGUMENT', `pool.shrinkAt (${String(p['pool.shrinkAt'])}) must be below pool.growAt (${String(p['pool.growAt'])})`)
  }
}

/** Validates KEY=VALUE assignments; all or nothing: one bad assignment changes nothing. */
export function applyAssignments (policy: Policy, assignments: string[]): Policy {
  const next: Record<string, unknown> = { ...policy }
  const seen = new Set<string>()
  for (const a of assignments) {
    const eq = a.indexOf('=')
    const key = eq > 0 ? a.slice(0, eq) : a
    if (eq === 0) throw new LogdiskError('BAD_ARGUMENT', `policy set takes KEY=VALUE (got "${a}")`)
    // Twice in one command: which one was meant is not ours to guess (the last won, silently).
    if (seen.has(key)) throw new LogdiskError('BAD_ARGUMENT', `policy ${key} is set twice in one command; give it once`)
    seen.add(key)
    // Own keys only: "__proto__", "toString" and the like are found on every object's
    // prototype, and were taken for keys (an internal error: helper-62).
    const spec = Object.hasOwn(POLICY_KEYS, key) ? (POLICY_KEYS as Record<string, KeySpec<unknown>>)[key] : undefined
    if (!spec) throw new LogdiskError('BAD_ARGUMENT', `unknown policy key "${key}"; valid keys: ${Object.keys(POLICY_KEYS).join(', ')}`)
    // `mirror` alone was answered `policy mirror takes 1|2 (got "mirror")` (helper-69).
    if (eq <= 0) throw new LogdiskError('BAD_ARGUMENT', `policy set takes KEY=VALUE (got "${a}"; ${key} takes ${spec.values})`)
    const value = eq > 0 ? spec.parse(a.slice(eq + 1)) : undefined
    if (value === undefined) throw new LogdiskError('BAD_ARGUMENT', `policy ${key} takes ${spec.values} (got "${a.slice(eq + 1)}")`)
    next[key] = value
  }
  checkTogether(next)
  return next as Policy
}

export function writePolicy (storeDir: string, policy: Policy): void {
  writeFileAtomic(path.join(storeDir, POLICY_FILE), JSON.stringify(policy, null, 2) + '\n')
}

export function volumeIdPolicy (p: Policy): VolumeIdPolicy {
  return { mode: p.volumeId, constant: p['volumeId.constant'], reuse: p['volumeId.reuse'] }
}

/** Each key with its current value and what it takes, for `policy show`. */
export function describePolicy (p: Policy): Array<{ key: string, value: unknown, values: string, default: unknown }> {
  return Object.entries(POLICY_KEYS).map(([key, spec]) => ({ key, value: (p as Record<string, unknown>)[key], values: spec.values, default: spec.default }))
}

/** Names of snapshots the policy engine takes (retention deletes them): `auto-<time>`. */
export const AUTO_PREFIX = 'auto-'
