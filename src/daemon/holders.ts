import fs from 'node:fs'
import path from 'node:path'

/**
 * Who holds the images of a mount: loop devices whose backing file is on it (and where their
 * filesystems are mounted), and processes with one of its files open. Read from /sys and
 * /proc only: nothing here touches the FUSE mount itself, so the mount daemon may call it
 * (a stat of its own mount from its own thread would deadlock). Linux only; elsewhere empty.
 */
export interface Holder {
  /** The image (file name inside the mount) it holds. */
  image: string
  /** One line: "/dev/loop3 (mounted at /media/d)" or "pid 812 (qemu-system-x86)". */
  what: string
  /** What to run to let go of it, when logdisk can tell. */
  release?: string
}

function within (mountpoint: string, file: string): string | undefined {
  const prefix = mountpoint.endsWith('/') ? mountpoint : mountpoint + '/'
  const clean = file.replace(/ \(deleted\)$/, '')
  return clean.startsWith(prefix) ? clean.slice(prefix.length) : undefined
}

function unescapeMounts (s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct) => String.fromCharCode(parseInt(oct, 8)))
}

/** Mount points of a block device, from /proc/mounts. */
export function mountsOfDevice (device: string): string[] {
  let text = ''
  try { text = fs.readFileSync('/proc/mounts', 'utf8') } catch { return [] }
  return text.split('\n').map(l => l.split(' ')).filter(f => f[0] === device).map(f => unescapeMounts(f[1]))
}

/** Loop devices whose backing file is on `mountpoint`, with the image (file name) each holds. */
export function loopDevicesOn (mountpoint: string): Array<{ device: string, image: string }> {
  const out: Array<{ device: string, image: string }> = []
  let names: string[] = []
  try { names = fs.readdirSync('/sys/block') } catch { return out }
  for (const name of names) {
    if (!name.startsWith('loop')) continue
    let backing: string
    try { backing = fs.readFileSync(`/sys/block/${name}/loop/backing_file`, 'utf8').trim() } catch { continue }
    const image = within(mountpoint, backing)
    if (image !== undefined) out.push({ device: `/dev/${name}`, image })
  }
  return out
}

/** Everything holding a file of `mountpoint` open: loop devices first, then processes. */
export function holdersOf (mountpoint: string, skipPids: ReadonlyArray<number | undefined> = [process.pid]): Holder[] {
  const out: Holder[] = []
  for (const { device, image } of loopDevicesOn(mountpoint)) {
    const mounts = [...mountsOfDevice(device), ...partitionMounts(device)]
    out.push({
      image,
      what: mounts.length > 0 ? `${device} (mounted at ${mounts.join(', ')})` : device,
      release: mounts.length > 0 ? `umount ${mounts.join(' ')}; losetup -d ${device}` : `losetup -d ${device}`
    })
  }
  let pids: string[] = []
  try { pids = fs.readdirSync('/proc').filter(p => /^\d+$/.test(p)) } catch { return out }
  for (const pid of pids) {
    if (skipPids.includes(Number(pid))) continue
    let fds: string[]
    try { fds = fs.readdirSync(`/proc/${pid}/fd`) } catch { continue }
    const images = new Set<string>()
    for (const fd of fds) {
      let target: string
      try { target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`) } catch { continue }
      const image = within(mountpoint, target)
      if (image !== undefined && image !== '') images.add(image)
    }
    if (images.size === 0) continue
    let comm = '?'
    try { comm = fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim() } catch { /* gone meanwhile */ }
    for (const image of images) out.push({ image, what: `pid ${pid} (${comm})` })
  }
  return out
}

/** Mount points of the partitions of a loop device (/dev/loop3p1, ...). */
function partitionMounts (device: string): string[] {
  const name = path.basename(device)
  let parts: string[] = []
  try { parts = fs.readdirSync(`/sys/block/${name}`).filter(p => p.startsWith(`${name}p`)) } catch { return [] }
  return parts.flatMap(p => mountsOfDevice(`/dev/${p}`))
}

/** One line naming what holds which image, for BUSY messages; '' when nothing is known. */
export function describeHolders (holders: Holder[]): string {
  if (holders.length === 0) return ''
  return holders.map(h => `${h.image} is held by ${h.what}`).join('; ')
}
