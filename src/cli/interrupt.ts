import { LogdiskError } from '../errors'
import { reportError } from './output'

/**
 * What Ctrl-C (SIGINT) or SIGTERM does while a command runs `work`. The first signal calls
 * `onSignal`: for an op that stops halfway (ops.ts INTERRUPTIBLE) it asks the op to stop and
 * returns nothing, and the command ends once the op has stopped, with the op's own
 * INTERRUPTED line (its `.partial` file already removed, so a rerun starts clean); for an op
 * the mount daemon runs to its end it returns the line to end with at once, saying so. A
 * second signal exits at once. Without this, Ctrl-C ended the command without a word while the
 * daemon went on, and a rerun was refused (`<out> exists`, `... is draining a volume`;
 * helper-73).
 */
export async function duringSignals<T> (work: () => Promise<T>, onSignal: (signal: NodeJS.Signals) => Promise<string | undefined>): Promise<T> {
  let signalled = false
  const handler = (signal: NodeJS.Signals): void => {
    if (signalled) {
      process.stderr.write(`logdisk: interrupted again (${signal}): exiting at once, without waiting for the job to stop (a .partial output file may be left)\n`)
      process.exit(130)
    }
    signalled = true
    onSignal(signal).then(line => {
      if (line === undefined) return
      // The request the daemon still answers would keep this process alive: end it here.
      reportError(new LogdiskError('INTERRUPTED', line))
      process.exit(130)
    }, err => {
      reportError(err)
      process.exit(130)
    })
  }
  process.on('SIGINT', handler)
  process.on('SIGTERM', handler)
  try {
    return await work()
  } finally {
    process.off('SIGINT', handler)
    process.off('SIGTERM', handler)
  }
}
