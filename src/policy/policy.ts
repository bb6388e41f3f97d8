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
  parse: t => /^\d+$/.test(t) && Number(t) > 0 ? Number(t) : undefined,
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

export const POLICY_KEYS = {
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
  return { ...defaultPolicy(), ...stored }
}

/** Validates KEY=VALUE assignments; all or nothing: one bad assignment changes nothing. */
export function applyAssignments (policy: Policy, assignments: string[]): Policy {
  const next: Record<string, unknown> = { ...policy }
  for (const a of assignments) {
    const eq = a.indexOf('=')
    const key = eq > 0 ? a.slice(0, eq) : a
    const spec = (POLICY_KEYS as Record<string, KeySpec<unknown>>)[key]
    if (!spec) throw new LogdiskError('BAD_ARGUMENT', `unknown policy key "${key}"; valid keys: ${Object.keys(POLICY_KEYS).join(', ')}`)
    const value = eq > 0 ? spec.parse(a.slice(eq + 1)) : undefined
    if (value === undefined) throw new LogdiskError('BAD_ARGUMENT', `policy ${key} takes ${spec.values} (got "${a.slice(eq + 1)}")`)
    next[key] = value
  }
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
