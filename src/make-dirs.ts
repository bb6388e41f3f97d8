import fs from 'node:fs'
import path from 'node:path'

/**
 * `mkdir -p` that cannot spin. Node 20's recursive mkdir (sync and async alike) loops forever
 * where mkdir(2) says ENOENT under a parent that exists (measured: `/proc/x`: ENOENT, then
 * EEXIST for /proc, then ENOENT again, ...), so a command given such a path hung. This makes
 * each missing component in turn from the nearest one that exists; the first failure throws
 * as mkdir(2) said it. An existing file throws EEXIST, as Node's does.
 */
export function makeDirs (dir: string): void {
  const missing: string[] = []
  for (let d = path.resolve(dir); !fs.existsSync(d); d = path.dirname(d)) {
    missing.push(d)
    if (path.dirname(d) === d) break
  }
  if (missing.length === 0 && !fs.statSync(dir).isDirectory()) fs.mkdirSync(dir) // throws EEXIST
  for (const d of missing.reverse()) {
    try {
      fs.mkdirSync(d)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || !fs.statSync(d).isDirectory()) throw err
    }
  }
}
