import { execFile } from 'node:child_process'
import { LogdiskError } from '../errors'

function fsfreeze (flag: '-f' | '-u', mountpoint: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('fsfreeze', [flag, mountpoint], (err, _out, stderr) => {
      if (err) reject(new LogdiskError('IO', `fsfreeze ${flag} ${mountpoint} failed: ${String(stderr).trim() || err.message}`))
      else resolve()
    })
  })
}

/**
 * Runs `fn` with the filesystem at `mountpoint` frozen (fsfreeze -f: its dirty data is written
 * to the image and new writes wait), so a sync point or snapshot taken inside is
 * application-consistent (004 cl. 1: the consistency agent). The filesystem is always thawed,
 * even when `fn` fails. The CLI runs this, never the daemon: the daemon must keep serving the
 * image while the kernel flushes the filesystem into it.
 */
export async function withFrozen<T> (mountpoint: string | undefined, fn: (frozen: boolean) => Promise<T>): Promise<T> {
  if (!mountpoint) return fn(false)
  await fsfreeze('-f', mountpoint)
  try {
    return await fn(true)
  } finally {
    await fsfreeze('-u', mountpoint)
  }
}
