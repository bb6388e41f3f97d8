/**
 * How the command line talks: text for people, or with `--json` JSON for programs. Under
 * `--json` the result is one JSON document on stdout, warnings are JSON lines on stderr
 * (`{"warning":"..."}`) and an error is `{"error":{"code":...,"message":...}}` on stderr
 * (src/cli/main.ts reportError), with the same exit codes as in text mode.
 */
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
