import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'

/** sha256 of every regular file under `root`, keyed by relative path. */
export function checksumTree (root: string): Map<string, string> {
  const out = new Map<string, string>()
  const walk = (dir: string): void => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name)
      if (entry.isDirectory()) walk(full)
      else if (entry.isFile()) out.set(path.relative(root, full), crypto.createHash('sha256').update(fs.readFileSync(full)).digest('hex'))
    }
  }
  walk(root)
  return out
}

/** Lists the differences between two checksum maps (empty when equal). */
export function diffTrees (a: Map<string, string>, b: Map<string, string>): string[] {
  const out: string[] = []
  for (const [k, v] of a) if (b.get(k) !== v) out.push(b.has(k) ? `changed ${k}` : `missing ${k}`)
  for (const k of b.keys()) if (!a.has(k)) out.push(`extra ${k}`)
  return out
}
