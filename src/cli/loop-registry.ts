import fs from 'node:fs'
import path from 'node:path'
import { writeFileAtomic } from '../store/config'

/**
 * The loop devices `logdisk attach` made, kept in /run (they do not outlive a reboot either):
 * after a daemon dies and devfuse's watchdog detaches its mount, a device over one of its
 * images is named only by a path inside that lost mount (`/current.img`), and nothing else
 * ties it to logdisk: a plain loop device over a file of a lazily unmounted filesystem looks
 * the same (a hostile test, helper-57), and losetup can no longer tell its backing device.
 * `unmount` names, and `detach` frees, only a lost device recorded here.
 */
const REGISTRY = process.env.LOGDISK_LOOP_REGISTRY ?? '/run/logdisk/loops.json'

export interface AttachedLoop { device: string, mountpoint: string, image: string }

function read (): AttachedLoop[] {
  try {
    const list = JSON.parse(fs.readFileSync(REGISTRY, 'utf8')) as AttachedLoop[]
    return Array.isArray(list) ? list : []
  } catch { return [] }
}

function write (list: AttachedLoop[]): void {
  try {
    fs.mkdirSync(path.dirname(REGISTRY), { recursive: true })
    writeFileAtomic(REGISTRY, JSON.stringify(list, null, 2) + '\n')
  } catch { /* no /run: lost devices are then only losetup's to free */ }
}

export function recordLoop (loop: AttachedLoop): void {
  write([...read().filter(l => l.device !== loop.device), loop])
}

export function forgetLoop (device: string): void {
  const list = read()
  if (list.some(l => l.device === device)) write(list.filter(l => l.device !== device))
}

/**
 * Recorded devices (of `mountpoint`, or any) that are still attached over an image of a mount
 * that is gone: their backing file reads `/<image>`, the image's path inside the lost mount.
 */
export function lostLoops (mountpoint?: string): Array<AttachedLoop & { backing: string }> {
  const out = []
  for (const l of read()) {
    if (mountpoint !== undefined && l.mountpoint !== mountpoint) continue
    let backing: string
    try { backing = fs.readFileSync(`/sys/block/${path.basename(l.device)}/loop/backing_file`, 'utf8').trim() } catch { continue }
    if (backing === `/${l.image}` && !fs.existsSync(backing)) out.push({ ...l, backing })
  }
  return out
}
