import fs from 'node:fs'
import net from 'node:net'
import { LogdiskError, type ErrorCode } from '../errors'

/**
 * The daemon's control socket: one JSON object per line each way.
 *   request  { op: string, args?: object }
 *   response { ok: true, result } | { ok: false, error: { code, message } }
 * CLI commands on a mounted store go through it, since the daemon holds the store's lock.
 */
export type Handler = (args: Record<string, unknown>, req: RequestContext) => Promise<unknown>

/** What a handler may ask about the request it serves. */
export interface RequestContext {
  /** The client went away (it gave up waiting): an answer would reach no one. */
  gone: () => boolean
  /**
   * The asking process, as it says (the CLI sends its pid): left out of the holders an answer
   * names, since a command run from a shell that holds an image inherits that descriptor.
   */
  clientPid?: number
}

/** The longest request line taken; longer ones end the connection. */
const MAX_REQUEST_BYTES = 1024 * 1024

export class ControlServer {
  private constructor (private readonly server: net.Server, readonly socketPath: string) {}

  static async listen (socketPath: string, handlers: Record<string, Handler>): Promise<ControlServer> {
    fs.rmSync(socketPath, { force: true }) // a socket file left by a killed daemon
    const server = net.createServer(conn => {
      let buffered = ''
      let gone = false
      let busy = false
      const req: RequestContext = { gone: () => gone || conn.destroyed }
      conn.setEncoding('utf8')
      conn.on('error', () => { gone = true })
      conn.on('end', () => { gone = true })
      conn.on('close', () => { gone = true })
      // One request at a time per connection, the next read only once the answer went out
      // (the CLI sends one per connection). Every line used to start its handler at once: a
      // client that sent 200 `log` requests and read no answer ran the daemon out of memory,
      // and other commands waited 10 minutes for it (a hostile test, helper-58).
      const next = (): void => {
        if (busy || gone || conn.destroyed) return
        const nl = buffered.indexOf('\n')
        if (nl < 0) {
          conn.resume()
          return
        }
        const line = buffered.slice(0, nl)
        buffered = buffered.slice(nl + 1)
        busy = true
        conn.pause()
        void answer(line, req).then(reply => {
          busy = false
          if (gone || conn.destroyed) return
          // An answer the client does not read waits in the socket: no next request until it drains.
          if (conn.write(JSON.stringify(reply) + '\n')) next()
          else conn.once('drain', next)
        })
      }
      conn.on('data', chunk => {
        buffered += chunk
        if (buffered.length > MAX_REQUEST_BYTES && buffered.indexOf('\n') < 0) {
          gone = true
          conn.destroy() // no request is this long: not a client of ours
          return
        }
        next()
      })
    })
    async function answer (line: string, req: RequestContext): Promise<unknown> {
      try {
        const request = JSON.parse(line) as { op: string, args?: Record<string, unknown>, from?: unknown }
        const handler = handlers[request.op]
        if (!handler) throw new LogdiskError('BAD_ARGUMENT', `the daemon does not know the command ${request.op}`)
        const clientPid = Number.isSafeInteger(request.from) ? request.from as number : undefined
        return { ok: true, result: await handler(request.args ?? {}, { ...req, clientPid }) }
      } catch (err) {
        const code = err instanceof LogdiskError ? err.code : 'IO'
        return { ok: false, error: { code, message: (err as Error).message } }
      }
    }
    // The socket is created 0600 (umask), not chmod'ed after: no window where others may connect.
    const umask = process.umask(0o177)
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(socketPath, () => resolve())
      })
    } finally {
      process.umask(umask)
    }
    return new ControlServer(server, socketPath)
  }

  close (): Promise<void> {
    return new Promise(resolve => this.server.close(() => {
      fs.rmSync(this.socketPath, { force: true })
      resolve()
    }))
  }
}

/**
 * Sends one request; rejects with the daemon's LogdiskError, NOT_MOUNTED when no one answers
 * (nothing listens, or no answer within `timeoutMs`), or DAEMON_DIED when the connection closes
 * before the answer came (the daemon was killed while it worked on the request).
 */
export function request<T = unknown> (socketPath: string, op: string, args: Record<string, unknown> = {}, timeoutMs = 0): Promise<T> {
  return new Promise((resolve, reject) => {
    const conn = net.createConnection(socketPath)
    let buffered = ''
    let settled = false
    let connected = false
    let timer: NodeJS.Timeout | undefined
    const settle = (fn: () => void): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      fn()
    }
    if (timeoutMs > 0) timer = setTimeout(() => { settle(() => reject(new LogdiskError('NOT_MOUNTED', `the daemon at ${socketPath} did not answer in ${timeoutMs} ms`))); conn.destroy() }, timeoutMs)
    conn.setEncoding('utf8')
    conn.on('connect', () => { connected = true; conn.write(JSON.stringify({ op, args, from: process.pid }) + '\n') })
    conn.on('data', chunk => {
      buffered += chunk
      const nl = buffered.indexOf('\n')
      if (nl < 0) return
      conn.end()
      let reply: { ok: boolean, result?: T, error?: { code: ErrorCode, message: string } }
      try {
        reply = JSON.parse(buffered.slice(0, nl))
      } catch (err) {
        settle(() => reject(new LogdiskError('IO', `the daemon at ${socketPath} sent an unreadable answer`, err)))
        return
      }
      settle(() => reply.ok ? resolve(reply.result as T) : reject(new LogdiskError(reply.error!.code, reply.error!.message)))
    })
    conn.on('error', err => {
      const code = (err as NodeJS.ErrnoException).code
      if (connected) settle(() => reject(new LogdiskError('DAEMON_DIED', `the daemon at ${socketPath} dropped the connection during ${op} (${code})`, err)))
      else settle(() => reject(new LogdiskError('NOT_MOUNTED', `no daemon answers at ${socketPath} (${code})`, err)))
    })
    conn.on('close', () => {
      settle(() => reject(new LogdiskError('DAEMON_DIED', `the daemon at ${socketPath} closed the connection during ${op} without answering`)))
    })
  })
}
