import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import type { Command } from 'commander'
import { LogdiskError } from '../../errors'
import { logdiskMountAt, logdiskMounts } from '../../daemon/paths'
import { CURRENT_IMAGE } from '../../fuse/image-ops'
import { printJson, warn } from '../output'
import { forgetLoop, lostLoops, recordLoop } from '../loop-registry'

/**
 * `attach`: a loop device with direct I/O over an image of a mounted store, the fast way to
 * put a filesystem on it (native-notes/loop-devices.md). `mount -o loop` attaches a buffered
 * loop device, which serializes every backend at about 8-10k random writes a second and
 * caches the image in the page cache a second time; `losetup --direct-io=on` passes each
 * request through as it comes, several at once. Snapshot images are always attached
 * read-only. `detach` undoes it, only for loop devices over logdisk images.
 */
export function register (program: Command): void {
  program.command('attach <mountpoint> [image]')
    .description('attach a loop device with direct I/O over an image (default current.img; snapshot images read-only) and print it')
    .option('--ro', 'attach read-only')
    .option('--json', 'print {device, image, mountpoint, readOnly, directIo}')
    .action(async (mntArg: string, imageArg: string | undefined, opts: { ro?: boolean, json?: boolean }) => {
      const mountpoint = path.resolve(mntArg)
      const { device, directIo } = await attach(mountpoint, imageArg, opts.ro === true)
      if (!directIo) warn(`the kernel left ${device} in buffered mode (direct I/O could not be enabled over this image)`)
      const image = imageName(imageArg)
      recordLoop({ device, mountpoint, image })
      if (opts.json) printJson({ device, image, mountpoint, readOnly: opts.ro === true || image !== CURRENT_IMAGE, directIo })
      else console.log(device)
    })
  program.command('detach <device>')
    .description('detach a loop device that logdisk attach made (refused while a filesystem on it is mounted)')
    .option('--json', 'print {device}')
    .action(async (deviceArg: string, opts: { json?: boolean }) => {
      await detach(deviceArg)
      if (opts.json) printJson({ device: path.resolve(deviceArg) })
      else console.log(`detached ${deviceArg}`)
    })
}

function run (cmd: string, args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  return new Promise(resolve => {
    execFile(cmd, args, { timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as any).code === 'number' ? (err as any).code : 1) : 0
      resolve({ code, stdout: String(stdout), stderr: String(stderr).trim() })
    })
  })
}

/** "snap", "snap.img" -> "snap.img"; undefined -> current.img. */
function imageName (arg: string | undefined): string {
  if (arg === undefined || arg === '') return CURRENT_IMAGE
  if (arg.includes('/')) throw new LogdiskError('BAD_ARGUMENT', `give an image name (current.img, <snapshot>.img), not a path: ${arg}`)
  return arg.endsWith('.img') ? arg : `${arg}.img`
}

export async function attach (mountpoint: string, imageArg: string | undefined, ro: boolean): Promise<{ device: string, directIo: boolean }> {
  if (process.getuid?.() !== 0) throw new LogdiskError('BAD_ARGUMENT', 'attach needs root (losetup)')
  if (logdiskMountAt(mountpoint) === undefined) {
    throw new LogdiskError('NOT_MOUNTED', `${mountpoint} is not a logdisk mount; logdisk mount <store> ${mountpoint} first`)
  }
  const image = imageName(imageArg)
  const file = path.join(mountpoint, image)
  if (!fs.existsSync(file)) {
    const images = fs.readdirSync(mountpoint).filter(f => f.endsWith('.img')).join(', ') // the images, not the stats file
    throw new LogdiskError('NOT_FOUND', `no image ${image} in ${mountpoint} (there: ${images})`)
  }
  const readOnly = ro || image !== CURRENT_IMAGE
  const r = await run('losetup', ['--find', '--show', '--direct-io=on', ...(readOnly ? ['--read-only'] : []), file])
  if (r.code !== 0) throw new LogdiskError('IO', `losetup could not attach ${file}: ${r.stderr}`)
  const device = r.stdout.trim()
  let directIo = false
  try {
    directIo = fs.readFileSync(`/sys/block/${path.basename(device)}/loop/dio`, 'utf8').trim() === '1'
  } catch { /* no sysfs: say nothing certain */ }
  return { device, directIo }
}

export async function detach (deviceArg: string): Promise<void> {
  const device = path.resolve(deviceArg)
  const name = path.basename(device)
  if (!/^loop\d+$/.test(name)) throw new LogdiskError('BAD_ARGUMENT', `${deviceArg} is not a loop device (/dev/loopN)`)
  let backing = ''
  try {
    backing = fs.readFileSync(`/sys/block/${name}/loop/backing_file`, 'utf8').trim()
  } catch {
    throw new LogdiskError('NOT_FOUND', `${device} is not attached to anything`)
  }
  const mounts = logdiskMounts().map(m => m.mountpoint)
  if (!mounts.some(m => path.dirname(backing) === m) && !lostLoops().some(l => l.device === device)) {
    throw new LogdiskError('BAD_ARGUMENT', `${device} is attached to ${backing}, not to a logdisk image; detach it with losetup -d yourself`)
  }
  const mountedOn = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
    .map(l => l.split(' - ')[1]?.split(' ') ?? [])
    .some(f => f[1] === device)
  if (mountedOn) throw new LogdiskError('BUSY', `${device} is mounted; umount it first`)
  const r = await run('losetup', ['-d', device])
  if (r.code !== 0) throw new LogdiskError('IO', `losetup -d ${device} failed: ${r.stderr}`)
  forgetLoop(device)
}
