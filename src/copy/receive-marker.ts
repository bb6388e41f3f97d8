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

export interface Creating { pid: number, startedAt: string }

export function markCreating (dir: string): void {
  writeFileAtomic(path.join(dir, CREATING_FILE), JSON.stringify({ pid: process.pid, startedAt: new Date().toISOString() }) + '\n')
}

export function clearCreating (dir: string): void {
  fs.rmSync(path.join(dir, CREATING_FILE), { force: true })
}

/** The receive that made `dir` and died before it finished, if any. */
export function unfinishedReceive (dir: string): Creating | undefined {
  try {
    const r = JSON.parse(fs.readFileSync(path.join(dir, CREATING_FILE), 'utf8')) as Creating
    return Number.isSafeInteger(r.pid) && !isAlive(r.pid) ? r : undefined
  } catch { return undefined }
}

/** One line about such a store. */
export function unfinishedReceiveText (dir: string, r: Creating): string {
  return `${dir} was made by a receive that did not finish (pid ${r.pid}, started ${r.startedAt}): it holds part of a stream and no snapshot; receive again with --force, or remove ${dir}`
}
