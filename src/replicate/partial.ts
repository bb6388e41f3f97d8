import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { LogdiskError } from '../errors'
import { isAlive } from '../process-alive'
import { writeFileAtomic } from '../store/config'

/**
 * The mark of a store that `create --from` is still building: written before anything else,
 * removed last. A kill (or a power loss) in between leaves it, so that the directory reads as
 * an unfinished recovery, not as "no store" or as a store, and the next `create --from` into
 * it starts over instead of refusing a directory that is not empty.
 */
export const PARTIAL_FILE = 'create-from.partial'

export interface PartialMark {
  from: string
  host: string
  pid: number
  startedAt: string
}

export function readPartial (dir: string): PartialMark | undefined {
  let text
  try { text = fs.readFileSync(path.join(dir, PARTIAL_FILE), 'utf8') } catch { return undefined }
  try {
    return JSON.parse(text) as PartialMark
  } catch {
    return { from: '?', host: '?', pid: 0, startedAt: '?' } // torn by the kill: still unfinished
  }
}

/** Whether the create --from that wrote `mark` still runs (on this host; another host's: assumed so). */
export function partialRunning (mark: PartialMark): boolean {
  if (mark.host !== os.hostname()) return mark.host !== '?'
  return mark.pid > 0 && isAlive(mark.pid)
}

export function writePartial (dir: string, from: string): void {
  const mark: PartialMark = { from, host: os.hostname(), pid: process.pid, startedAt: new Date().toISOString() }
  writeFileAtomic(path.join(dir, PARTIAL_FILE), JSON.stringify(mark, null, 2) + '\n')
}

/** Empties `dir` but for the mark, for a start (or a start over) of the recovery. */
export function clearForRecovery (dir: string): void {
  for (const name of fs.readdirSync(dir)) if (name !== PARTIAL_FILE) fs.rmSync(path.join(dir, name), { recursive: true, force: true })
}

/** The one-line error for a command given a store that create --from has not finished. */
export function unfinishedError (dir: string, mark: PartialMark): LogdiskError {
  if (partialRunning(mark)) {
    return new LogdiskError('BUSY', `${dir} is being made by logdisk create --from ${mark.from} (pid ${mark.pid} on ${mark.host}, since ${mark.startedAt}); wait for it to finish`)
  }
  return new LogdiskError('STORE_NOT_FOUND', `${dir} is an unfinished logdisk create --from ${mark.from} (pid ${mark.pid} on ${mark.host}, started ${mark.startedAt}, stopped before it was done): ` +
    `run logdisk create ${dir} --from ${mark.from} again (it starts over), or remove the directory`)
}
