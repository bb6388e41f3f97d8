import path from 'node:path'

/** Where scripts/build-native.mjs puts native/<name>.c built: <package>/build/<name>.node. */
export function addonPath (name: string): string {
  return path.join(__dirname, '..', '..', '..', 'build', `${name}.node`)
}

/**
 * One of the optional addons (native/*.c), or undefined when it was not built (no compiler)
 * or does not load here: every caller has a way without it.
 */
export function loadAddon<T> (name: string): T | undefined {
  if (process.platform !== 'linux') return undefined
  try {
    return require(addonPath(name)) as T
  } catch {
    return undefined
  }
}
