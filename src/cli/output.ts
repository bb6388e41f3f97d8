/**
 * How the command line talks: text for people, or with `--json` JSON for programs. Under
 * `--json` the result is one JSON document on stdout, warnings are JSON lines on stderr
 * (`{"warning":"..."}`) and an error is `{"error":{"code":...,"message":...}}` on stderr
 * (reportError below), with the same exit codes as in text mode.
 */
import { LogdiskError } from '../errors'

let json = false

/** Set once from argv, before any command runs. */
export function setJsonMode (on: boolean): void { json = on }
export function jsonMode (): boolean { return json }

/** A warning line on stderr: `logdisk: warning: ...`, or `{"warning":"..."}` under --json. */
export function warn (message: string): void {
  process.stderr.write(json ? `${JSON.stringify({ warning: message })}\n` : `logdisk: warning: ${message}\n`)
}

/** A JSON result on stdout (2-space indent, as every --json output). */
export function printJson (value: unknown): void {
  console.log(JSON.stringify(value, null, 2))
}

/**
 * Prints the one-line error every command ends with on failure, and sets the exit code. Under
 * --json the same error is `{"error":{"code":...,"message":...}}` on stderr, same exit code:
 * a LogdiskError's code; `IO` (with `errno`) for an operating system error no command
 * foresaw; `INTERNAL` for a bug (exit 70).
 */
export function reportError (err: unknown): void {
  const sys = err as NodeJS.ErrnoException
  let code: string
  let message: string
  let errno: string | undefined
  if (err instanceof LogdiskError) {
    code = err.code
    message = oneLine(err.message)
    // 130: what a shell reports for a command that Ctrl-C ended.
    process.exitCode = err.code === 'INTERRUPTED' ? 130 : 1
  } else if (typeof sys?.code === 'string' && typeof sys.syscall === 'string') {
    // The operating system refused something a command did not foresee: still one line.
    code = 'IO'
    errno = sys.code
    message = oneLine(sys.message)
    process.exitCode = 1
  } else {
    // A bug: one line; the stack only on request.
    code = 'INTERNAL'
    message = `internal error: ${oneLine((err as Error)?.message ?? String(err))}`
    process.exitCode = 70
  }
  if (jsonMode()) {
    process.stderr.write(`${JSON.stringify({ error: { code, message, ...(errno ? { errno } : {}) } })}\n`)
    if (code === 'INTERNAL' && process.env.LOGDISK_DEBUG) process.stderr.write(`${(err as Error)?.stack ?? ''}\n`)
    return
  }
  const stack = code !== 'INTERNAL' ? '' : process.env.LOGDISK_DEBUG ? `\n${(err as Error)?.stack ?? ''}` : ' (LOGDISK_DEBUG=1 prints the stack)'
  process.stderr.write(`logdisk: ${message}${stack}\n`)
}

export function oneLine (text: string): string {
  return text.replace(/\s*\n\s*/g, '; ')
}
