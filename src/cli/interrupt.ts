import { LogdiskError, isLogdiskError } from '../errors'
import { reportError } from './output'

/** The signal that interrupted this command (the first duringSignals saw), if one did. */
let interruptedBy: NodeJS.Signals | undefined

/**
 * Whether this process got Ctrl-C (SIGINT) or SIGTERM while a command ran its job: an error
 * that follows (the other end of a pipeline gone with the same Ctrl-C) is the interruption's.
 */
export function interruptedSignal (): NodeJS.Signals | undefined {
  return interruptedBy
}

/**
 * What Ctrl-C (SIGINT) or SIGTERM does while a command runs `work`. The first signal calls
 * `onSignal`: for an op that stops halfway (ops.ts INTERRUPTIBLE) it asks the op to stop and
 * returns nothing, and the command ends once the op has stopped, with the op's own
 * INTERRUPTED line (its `.partial` file already removed, so a rerun starts clean); for an op
 * the mount daemon runs to its end it returns the line to end with at once, saying so. A
 * second signal exits at once. Without this, Ctrl-C ended the command without a word while the
 * daemon went on, and a rerun was refused (`<out> exists`, `... is draining a volume`;
 * helper-73).
 *
 * `interrupted`: the op's INTERRUPTED error. Once a signal came, an error that ends `work`
 * otherwise is reported as that (exit 130): `send --out - | receive` with Ctrl-C to the whole
 * pipeline saw the receiving end go away before the job's next step, and exited 1 with "the
 * receiving end of the stream went away" (helper-78). Not a daemon that died: its own line
 * says what it removed.
 */
export async function duringSignals<T> (work: () => Promise<T>, onSignal: (signal: NodeJS.Signals) => Promise<string | undefined>, interrupted?: () => LogdiskError): Promise<T> {
  let signalled = false
  const handler = (signal: NodeJS.Signals): void => {
    if (signalled) {
      process.stderr.write(`logdisk: interrupted again (${signal}): exiting at once, without waiting for the job to stop (a .partial output file may be left)\n`)
      process.exit(130)
    }
    signalled = true
    interruptedBy ??= signal
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
  } catch (err) {
    if (signalled && interrupted !== undefined && isLogdiskError(err) && err.code !== 'INTERRUPTED' && err.code !== 'DAEMON_DIED') {
      const instead = interrupted()
      throw new LogdiskError(instead.code, instead.message, err)
    }
    throw err
  } finally {
    process.off('SIGINT', handler)
    process.off('SIGTERM', handler)
  }
}
