import { createStream } from 'rotating-file-stream'
import path from 'node:path'

/**
 * The background daemon's log writer: a small process at the other end of the daemon's stdout
 * and stderr (one pipe), writing `<store>/daemon.log`. Two jobs:
 * - JSON lines only: the daemon's pino lines pass as they are; anything else that reaches the
 *   pipe (an uncaught exception's stack, a Node warning, libfuse or a child process writing to
 *   the inherited stderr: text no JS hook sees) becomes one JSON line, `{"level":50,"time":..,
 *   "stray":true,"msg":"<the text>"}`, consecutive lines of one write kept together.
 * - Rotation by size (rotating-file-stream, as logrotate does it): daemon.log is renamed
 *   daemon.log.1 (the older ones shift up) once it passes LOGDISK_LOG_SIZE (default 10M);
 *   LOGDISK_LOG_KEEP (default 3) rotated files are kept.
 * It exits once the pipe ends: when the daemon (and anything it started that inherited the
 * pipe) has exited.
 */
export const LOG_SIZE = process.env.LOGDISK_LOG_SIZE || '10M'
export const LOG_KEEP = Number(process.env.LOGDISK_LOG_KEEP || 3)

/** Turns what arrived on the pipe into JSON lines; `rest` is an unfinished last line. */
export function toJsonLines (text: string, now = Date.now()): { lines: string[], rest: string } {
  const parts = text.split('\n')
  const rest = parts.pop() ?? ''
  const lines: string[] = []
  let stray: string[] = []
  const flush = (): void => {
    if (stray.length > 0) lines.push(JSON.stringify({ level: 50, time: now, stray: true, msg: stray.join('\n') }))
    stray = []
  }
  for (const line of parts) {
    if (isJsonObject(line)) {
      flush()
      lines.push(line)
    } else if (line.trim() !== '') stray.push(line)
  }
  flush()
  return { lines, rest }
}

function isJsonObject (line: string): boolean {
  if (!line.startsWith('{')) return false
  try {
    const v = JSON.parse(line)
    return typeof v === 'object' && v !== null && !Array.isArray(v)
  } catch {
    return false
  }
}

function main (file: string): void {
  // A file name with `rotate`: logrotate's names, daemon.log.1 (newest) to daemon.log.N.
  const out = createStream(path.basename(file), {
    path: path.dirname(file),
    size: LOG_SIZE,
    rotate: LOG_KEEP
  })
  // Rotation trouble (a full disk) must not end the writer: the daemon would get EPIPE.
  out.on('error', () => undefined)
  out.on('warning', () => undefined)
  // Signals to the daemon's terminal or group are not for the writer: it ends with the pipe.
  for (const signal of ['SIGHUP', 'SIGINT', 'SIGTERM'] as const) process.on(signal, () => undefined)
  let pending = ''
  process.stdin.setEncoding('utf8')
  process.stdin.on('data', (chunk: string) => {
    const { lines, rest } = toJsonLines(pending + chunk)
    pending = rest
    if (lines.length > 0) out.write(lines.join('\n') + '\n')
  })
  process.stdin.on('end', () => {
    const { lines } = toJsonLines(pending + '\n')
    if (lines.length > 0) out.write(lines.join('\n') + '\n')
    out.end(() => process.exit(0))
  })
}

if (require.main === module) main(process.argv[2])
