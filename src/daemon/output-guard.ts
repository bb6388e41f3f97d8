import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError } from '../errors'

/**
 * Refuses an output path (restore/export/send --out) that would be written through the very
 * mount the daemon serves: a file on the mount, a file on a filesystem whose loop device is
 * backed by an image of the mount, or such a block device itself. The daemon would then wait
 * on the kernel while the kernel waits on the daemon (issue 10: a deadlocked mount that not
 * even kill -9 frees). Device numbers decide, not path prefixes: symlinks and bind mounts
 * lead to the same st_dev. Only async stats and /proc, /sys reads: safe inside the daemon.
 */
export async function assertOutsideMount (out: string, mountpoint: string, use?: { what: string, instead: string }): Promise<void> {
  const mountDev = deviceOfMount(mountpoint)
  const refuse = (why: string): never => {
    if (use) throw new LogdiskError('BAD_ARGUMENT', `refusing to use ${use.what}: ${why}, which this store's daemon serves (its writes would wait on themselves); ${use.instead} outside ${mountpoint}`)
    throw new LogdiskError('BAD_ARGUMENT', `refusing to write ${out}: ${why}, which this store's daemon serves (the write would wait on itself); give an --out outside ${mountpoint}`)
  }
  // The nearest existing directory above the output (the output itself is created later).
  let dir = path.dirname(path.resolve(out))
  let dirStat: fs.Stats | undefined
  while (!dirStat) {
    try {
      dirStat = await fs.promises.stat(dir)
    } catch {
      if (path.dirname(dir) === dir) return
      dir = path.dirname(dir)
    }
  }
  if (mountDev !== undefined && dirStat.dev === mountDev) refuse(`it is on the mount at ${mountpoint}`)
  const held = blockDeviceOnMount(dirStat.dev, mountpoint)
  if (held) refuse(`its filesystem sits on ${held}`)
  let outStat: fs.Stats | undefined
  try { outStat = await fs.promises.stat(out) } catch { /* not there yet */ }
  if (outStat) {
    if (mountDev !== undefined && outStat.dev === mountDev) refuse(`it is on the mount at ${mountpoint}`)
    if (outStat.isBlockDevice()) {
      const dev = blockDeviceOnMount(outStat.rdev, mountpoint)
      if (dev) refuse(`it is ${dev}`)
    }
  }
}

/** glibc's makedev, as libuv reports st_dev and st_rdev. */
function makedev (major: number, minor: number): number {
  return (major & 0xfff) * 256 + (minor & 0xff) + (minor & ~0xff) * 4096 + Math.floor(major / 4096) * 4096 * 2 ** 32
}

function majorMinor (dev: number): [number, number] {
  const lo = dev % 2 ** 32
  const hi = Math.floor(dev / 2 ** 32)
  const major = ((lo >>> 8) & 0xfff) | (hi & 0xfffff000)
  const minor = (lo & 0xff) | ((lo >>> 12) & 0xfff00)
  return [major, minor]
}

/** st_dev of the filesystem mounted at `mountpoint`, from /proc/self/mountinfo (no stat of the mount). */
export function deviceOfMount (mountpoint: string): number | undefined {
  let text = ''
  try { text = fs.readFileSync('/proc/self/mountinfo', 'utf8') } catch { return undefined }
  const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, oct) => String.fromCharCode(parseInt(oct, 8)))
  let found: number | undefined
  for (const line of text.split('\n')) {
    const f = line.split(' ')
    if (f.length < 5 || unescape(f[4]) !== mountpoint) continue
    const [major, minor] = f[2].split(':').map(Number)
    found = makedev(major, minor) // the last one listed is the one on top
  }
  return found
}

/**
 * Whether block device `dev` is, or is stacked on (partition, device mapper, md), a loop device
 * whose backing file is on `mountpoint`: returns e.g. "/dev/loop3 (backed by .../current.img)".
 */
function blockDeviceOnMount (dev: number, mountpoint: string, depth = 0): string | undefined {
  const [major, minor] = majorMinor(dev)
  if (major === 0 || depth > 8) return undefined
  let sys: string
  try { sys = fs.realpathSync(`/sys/dev/block/${major}:${minor}`) } catch { return undefined }
  const prefix = mountpoint.endsWith('/') ? mountpoint : mountpoint + '/'
  const candidates = [sys]
  if (fs.existsSync(path.join(sys, 'partition'))) candidates.push(path.dirname(sys))
  for (const c of candidates) {
    let backing: string
    try { backing = fs.readFileSync(path.join(c, 'loop', 'backing_file'), 'utf8').trim() } catch { continue }
    if (backing.startsWith(prefix)) return `/dev/${path.basename(c)} (backed by ${backing})`
  }
  for (const c of candidates) {
    let slaves: string[] = []
    try { slaves = fs.readdirSync(path.join(c, 'slaves')) } catch { continue }
    for (const s of slaves) {
      let devText: string
      try { devText = fs.readFileSync(path.join(c, 'slaves', s, 'dev'), 'utf8').trim() } catch { continue }
      const [ma, mi] = devText.split(':').map(Number)
      const held = blockDeviceOnMount(makedev(ma, mi), mountpoint, depth + 1)
      if (held) return held
    }
  }
  return undefined
}
