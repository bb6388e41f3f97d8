import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError } from '../errors'
import { DirTarget } from '../archive/dir'
import { CLONE_FILE } from '../clone/clone'
import { parseTarget } from '../archive/parse-target'
import { archiveLink } from '../archive/link'
import { readConfig } from '../store/config'
import type { Policy } from './policy'

/** The keys whose value names backing storage: checked against the world before they are written. */
const TARGET_KEYS = ['archive.target', 'replicate.target'] as const

/** Object name probed on an S3 target: a HEAD of it proves the bucket answers to our keys. */
const S3_PROBE = 'logdisk-policy-probe'

/**
 * What `policy set` can check beyond the form of a value, before anything is written: a
 * directory target exists and this user can write in it; an S3 target's bucket answers.
 * Only targets that change are checked (an unreachable bucket set last week does not block
 * `policy set snapshot.every=1h`). With `storeDir`, a clone is refused a replica. Throws one
 * LogdiskError naming the key.
 */
export async function checkTargets (before: Policy, after: Policy, storeDir?: string): Promise<void> {
  for (const key of TARGET_KEYS) {
    const spec = after[key]
    if (spec === '' || spec === before[key]) continue
    // Every later write and mount was refused for it instead (a hostile test, helper-51).
    if (key === 'replicate.target' && storeDir !== undefined && fs.existsSync(path.join(storeDir, CLONE_FILE))) {
      throw new LogdiskError('BAD_ARGUMENT', `${key}=${spec}: ${storeDir} is a clone: its replica would lack the parent's blocks; promote it first (logdisk promote ${storeDir}); nothing was changed`)
    }
    await checkTarget(key, spec)
  }
  const [from, to] = [before['archive.target'], after['archive.target']]
  if (storeDir !== undefined && from !== '' && to !== from) await checkArchivedStay(from, to, storeDir)
}

/**
 * A store reads its archived segments from archive.target: a new target (or none) must hold
 * every segment the current one holds for it, or those reads fail (EIO). A change was accepted
 * and the image turned unreadable; setting the old target back made the segments archived
 * meanwhile unreadable instead (a hostile test, helper-56). A current target that cannot be
 * listed is not checked: moving away from a lost archive must stay possible.
 */
async function checkArchivedStay (from: string, to: string, storeDir: string): Promise<void> {
  const uuid = readConfig(storeDir).uuid
  const listed = async (spec: string): Promise<number[]> => {
    const target = parseTarget(spec)
    try { return await archiveLink(target, uuid).list() } finally { await target.close().catch(() => undefined) }
  }
  let held: number[]
  try { held = await listed(from) } catch { return }
  if (held.length === 0) return
  const few = (ids: number[]): string => ids.slice(0, 5).join(', ') + (ids.length > 5 ? ', ...' : '')
  if (to === '') {
    throw new LogdiskError('BAD_ARGUMENT', `archive.target=: ${held.length} segment(s) of this store are archived in ${from} (${few(held)}), and read from there; without a target they cannot be read; nothing was changed`)
  }
  const have = new Set(await listed(to))
  const missing = held.filter(id => !have.has(id))
  if (missing.length > 0) {
    throw new LogdiskError('BAD_ARGUMENT', `archive.target=${to}: ${missing.length} segment(s) archived in ${from} are not there (${few(missing)}); the store reads them from its target and would fail: copy the objects ${uuid}.* from ${from} to ${to} first, then set it; nothing was changed`)
  }
}

async function checkTarget (key: string, spec: string): Promise<void> {
  const target = parseTarget(spec, process.env, { role: key.startsWith('replicate.') ? 'replica' : 'archive' })
  try {
    if (target instanceof DirTarget) checkDir(key, spec, target.dir)
    else await target.has(S3_PROBE)
  } catch (err) {
    if (err instanceof LogdiskError && err.message.startsWith(`${key}=`)) throw err
    throw new LogdiskError(err instanceof LogdiskError ? err.code : 'IO', `${key}=${spec}: ${(err as Error).message}; nothing was changed`, err)
  } finally {
    await target.close().catch(() => undefined)
  }
}

function checkDir (key: string, spec: string, dir: string): void {
  const bad = (why: string, code: 'BAD_ARGUMENT' | 'READ_ONLY' = 'BAD_ARGUMENT', cause?: unknown): LogdiskError =>
    new LogdiskError(code, `${key}=${spec}: ${why}; nothing was changed`, cause)
  let stat: fs.Stats
  try {
    stat = fs.statSync(dir)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') throw bad(`${dir} does not exist: create it first (mkdir -p ${dir})`, 'BAD_ARGUMENT', err)
    throw bad(`${dir} cannot be reached (${code ?? String(err)})`, 'BAD_ARGUMENT', err)
  }
  if (!stat.isDirectory()) throw bad(`${dir} is not a directory`)
  // A real write, not access(2): root passes access() on a read-only filesystem.
  const probe = path.join(dir, `.logdisk-probe-${process.pid}`)
  try {
    fs.writeFileSync(probe, '')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw bad(`${dir} is not writable by this user (${code ?? String(err)})`, 'READ_ONLY', err)
  } finally {
    fs.rmSync(probe, { force: true })
  }
}
