import fs from 'node:fs'
import path from 'node:path'
import { writeFileAtomic } from '../store/config'
import { isAlive } from '../process-alive'

/**
 * A store a full `receive` is making holds `receive-creating.json` (its pid and start) until
 * the snapshot is cut. One whose receive died (kill -9) holds part of a stream and no
 * snapshot: receive, mount and status say so instead of showing it as any store.
 */
export const CREATING_FILE = 'receive-creating.json'
/**
 * A store a receive is applying a stream to holds `receive-applying.json` (its pid, start and
 * base) from the first write until the snapshot is cut: one killed part way leaves the
 * current volume holding part of the stream, and the next receive was refused as if the user
 * had written since the base ("give --force", helper-63). Written by the process applying
 * the stream (the daemon, when mounted), so its pid is the one whose death matters.
 */
export const APPLYING_FILE = 'receive-applying.json'

export interface Creating { pid: number, startedAt: string, kind?: 'creating' | 'applying', base?: string, failed?: boolean }

export function markCreating (dir: string): void {
  writeFileAtomic(path.join(dir, CREATING_FILE), JSON.stringify({ pid: process.pid, startedAt: new Date().toISOString() }) + '\n')
}

export function clearCreating (dir: string): void {
  fs.rmSync(path.join(dir, CREATING_FILE), { force: true })
}

/** `failed`: the receive failed after it began writing (its process may live on): kept, with the base it had. */
export function markApplying (dir: string, base: string | undefined, failed = false): void {
  const file = path.join(dir, APPLYING_FILE)
  let before: Partial<Creating> = {}
  if (failed) try { before = JSON.parse(fs.readFileSync(file, 'utf8')) as Creating } catch { /* none */ }
  const kept = base ?? before.base
  writeFileAtomic(file, JSON.stringify({ pid: process.pid, startedAt: before.startedAt ?? new Date().toISOString(), ...(kept !== undefined ? { base: kept } : {}), ...(failed ? { failed: true } : {}) }) + '\n')
}

export function clearApplying (dir: string): void {
  fs.rmSync(path.join(dir, APPLYING_FILE), { force: true })
}

/** The receive that made `dir`, or was applying a stream to it, and died before it finished, if any. */
export function unfinishedReceive (dir: string): Creating | undefined {
  for (const [file, kind] of [[CREATING_FILE, 'creating'], [APPLYING_FILE, 'applying']] as const) {
    try {
      const r = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) as Creating
      if (Number.isSafeInteger(r.pid) && (r.failed === true || !isAlive(r.pid))) return { ...r, kind }
    } catch { /* none */ }
  }
  return undefined
}

/** One line about such a store. */
export function unfinishedReceiveText (dir: string, r: Creating): string {
  if (r.kind === 'applying') {
    const base = r.base === undefined ? 'an empty volume' : r.base
    return `the current volume of ${dir} holds part of a stream that a receive ${r.failed === true ? 'failed while' : 'did not finish'} applying (pid ${r.pid}, started ${r.startedAt}): receive again with --force, which rolls it back to ${base} (with any write made since) and applies the stream whole`
  }
  return `${dir} was made by a receive that did not finish (pid ${r.pid}, started ${r.startedAt}): it holds part of a stream and no snapshot; receive again with --force, or remove ${dir}`
}
