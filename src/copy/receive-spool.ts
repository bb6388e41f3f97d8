import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError, fromSystemError } from '../errors'
import { CONFIG_FILE } from '../store/config'
import { isAlive } from '../process-alive'

/**
 * The spool of a receive: a stream from a pipe or a FIFO is checked whole before anything is
 * applied, so it is first copied to a file beside the store data (<store>/receive-<pid>.spool,
 * or <parent>/.<name>.receive-<pid>.spool when the store is still to be created), removed
 * afterwards. <pid> is the process that owns it: the command while it spools, and then the
 * process that applies it (the mount daemon takes it over: claimSpool). A spool whose owner is
 * gone is dead, and the next receive removes it.
 */
const SPOOL = '.spool'

/** Where the spools of receives into `dir` lie, and how their names begin. */
export function spoolPlace (dir: string): { where: string, prefix: string } {
  return fs.existsSync(path.join(dir, CONFIG_FILE)) ? { where: dir, prefix: 'receive-' } : { where: path.dirname(dir), prefix: `.${path.basename(dir)}.receive-` }
}

/** The spool file process `pid` uses for a receive into `dir`. */
export function spoolFile (dir: string, pid = process.pid): string {
  const { where, prefix } = spoolPlace(dir)
  return path.join(where, `${prefix}${pid}${SPOOL}`)
}

/**
 * Removes the spools of receives into `dir` whose owners are gone: a receive killed while it
 * spooled left its spool for good, as large as its stream (a hostile test, helper-53). A spool
 * the mount daemon applies is its own (claimSpool), and stays while the daemon lives.
 */
export function removeDeadSpools (dir: string): void {
  const { where, prefix } = spoolPlace(dir)
  let names: string[]
  try { names = fs.readdirSync(where) } catch { return }
  for (const name of names) {
    const pid = name.startsWith(prefix) && name.endsWith(SPOOL) ? name.slice(prefix.length, -SPOOL.length) : ''
    if (/^\d+$/.test(pid) && !isAlive(Number(pid))) fs.rmSync(path.join(where, name), { force: true })
  }
}

/**
 * The process that applies a spooled stream to the store in `storeDir` (the mount daemon, or
 * the command itself) takes the spool `file` over: renamed to carry this process's pid, it
 * is this process's to remove once the receive ends. A receive Ctrl-C'd while the daemon
 * applied its stream ended at once and left the spool under its own, dead, pid: it stayed for
 * good, and a later receive removed it as dead while the daemon still read it (that receive
 * then failed while applying). Returns the spool's name now; undefined when `file` is not
 * a spool of a receive into this store (nothing is claimed, nor removed).
 */
export function claimSpool (file: string, storeDir: string): string | undefined {
  const dir = path.resolve(storeDir)
  const name = path.basename(file)
  const places = [{ where: dir, prefix: 'receive-' }, { where: path.dirname(dir), prefix: `.${path.basename(dir)}.receive-` }]
  const place = places.find(p => path.dirname(path.resolve(file)) === p.where && name.startsWith(p.prefix) && /^\d+$/.test(name.slice(p.prefix.length, -SPOOL.length)) && name.endsWith(SPOOL))
  if (place === undefined) return undefined
  const mine = path.join(place.where, `${place.prefix}${process.pid}${SPOOL}`)
  if (path.resolve(file) === mine) return mine
  try {
    fs.renameSync(file, mine)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new LogdiskError('NOT_FOUND', `the spooled stream ${file} is gone (its receive was interrupted, and a later receive removed it); nothing was applied; receive the stream again`, err)
    throw fromSystemError(err, `take over the spooled stream ${file}`)
  }
  return mine
}
