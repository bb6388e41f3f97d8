import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError } from '../errors'
import { isAlive, readDaemonInfo } from '../daemon/paths'

function exec (cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, (err, out, stderr) => {
      if (err) reject(new LogdiskError('IO', `${cmd} ${args.join(' ')} failed: ${String(stderr).trim() || err.message}`))
      else resolve(String(out))
    })
  })
}

/**
 * Refuses to freeze anything but a filesystem that lives on this store's current.img (through
 * a loop device): freezing another filesystem, `/` say, would hang the machine, not help.
 */
async function checkFreezable (storeArg: string, fsMountpoint: string): Promise<void> {
  const store = path.resolve(storeArg)
  const daemon = readDaemonInfo(store)
  if (!daemon || !isAlive(daemon.pid)) throw new LogdiskError('NOT_MOUNTED', `--freeze needs ${store} mounted (its current.img loop-mounted at ${fsMountpoint})`)
  const image = fs.realpathSync(path.join(daemon.mountpoint, 'current.img'))
  const source = (await exec('findmnt', ['-no', 'SOURCE', '--mountpoint', path.resolve(fsMountpoint)]).catch(() => '')).trim()
  if (!source) throw new LogdiskError('BAD_ARGUMENT', `${fsMountpoint} is not a mounted filesystem`)
  const backing = source.startsWith('/dev/loop') ? (await exec('losetup', ['-nO', 'BACK-FILE', source]).catch(() => '')).trim() : ''
  if (backing !== image) {
    throw new LogdiskError('BAD_ARGUMENT', `${fsMountpoint} is not on ${image} (it is on ${backing || source}); --freeze only freezes the filesystem on this store's image`)
  }
}

/**
 * Runs `fn` with the filesystem at `mountpoint` frozen (fsfreeze -f: its dirty data is written
 * to the image and new writes wait), so a sync point or snapshot taken inside is
 * application-consistent (004 cl. 1: the consistency agent). The filesystem is always thawed:
 * when `fn` fails, and on Ctrl-C or SIGTERM meanwhile, also while fsfreeze -f still runs. The
 * CLI runs this, never the daemon: the daemon must keep serving the image while the kernel
 * flushes the filesystem into it.
 */
export async function withFrozen<T> (storeArg: string, mountpoint: string | undefined, fn: (frozen: boolean) => Promise<T>): Promise<T> {
  if (!mountpoint) return fn(false)
  await checkFreezable(storeArg, mountpoint)
  // The handlers go in before fsfreeze -f runs: it flushes the filesystem first (a second or
  // more with dirty data), and a Ctrl-C then killed this process with no handler while the
  // freeze went through; every writer hung until someone ran fsfreeze -u (helper-73).
  let freezing: Promise<unknown> | undefined
  let frozen = false
  let interrupted = false
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted) return
    interrupted = true
    void (async () => {
      await freezing?.catch(() => undefined) // it may still freeze: thawed after it ends
      await exec('fsfreeze', ['-u', mountpoint]).catch(() => undefined) // not frozen: nothing to do
      process.stderr.write(`logdisk: interrupted (${signal}); ${mountpoint} is thawed; ${frozen ? `the cut may have been made: see logdisk snapshots ${storeArg}` : 'nothing was cut'}\n`)
      process.exit(signal === 'SIGINT' ? 130 : 143)
    })()
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  try {
    freezing = exec('fsfreeze', ['-f', mountpoint])
    try {
      await freezing
    } catch (err) {
      if (interrupted) await new Promise(() => {}) // the handler thaws and exits
      // EBUSY: frozen already, by an interrupted --freeze killed outright or by someone else.
      if (/busy/i.test((err as Error).message)) throw new LogdiskError('BUSY', `${mountpoint} is frozen already (by another fsfreeze, or a --freeze killed while it held it); if nothing else froze it, thaw it with: fsfreeze -u ${mountpoint}; nothing was done`, err)
      throw err
    }
    if (interrupted) await new Promise(() => {})
    frozen = true
    return await fn(true)
  } finally {
    if (!interrupted) {
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
      if (frozen) await exec('fsfreeze', ['-u', mountpoint])
    }
  }
}
