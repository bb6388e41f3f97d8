import http from 'node:http'
import { LogdiskError } from '../errors'

/** HOST:PORT (IPv6 as [::1]:9100; a bare :PORT or PORT listens on 127.0.0.1). */
export function parseListenAddress (text: string): { host: string, port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):?(\d+)$/.exec(text.trim())
  const port = m ? Number(m[3]) : NaN
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new LogdiskError('BAD_ARGUMENT', `--metrics "${text}" is not HOST:PORT (for example 127.0.0.1:9100, or 0.0.0.0:9100 for every interface)`)
  }
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port }
}

/**
 * Serves `GET /metrics` (Prometheus text format, from `render`) at `address`; resolves to the
 * address it listens on (HOST:PORT, with the port the kernel chose for port 0).
 */
export async function serveMetrics (address: string, render: () => Promise<{ contentType: string, body: string }>): Promise<{ address: string, close: () => Promise<void> }> {
  const { host, port } = parseListenAddress(address)
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0]
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' }).end()
      return
    }
    if (url !== '/metrics') {
      res.writeHead(url === '/' ? 200 : 404, { 'Content-Type': 'text/plain' }).end(url === '/' ? 'logdisk: metrics at /metrics\n' : 'not found; metrics are at /metrics\n')
      return
    }
    render().then(({ contentType, body }) => {
      res.writeHead(200, { 'Content-Type': contentType }).end(req.method === 'HEAD' ? undefined : body)
    }, (err: Error) => {
      res.writeHead(500, { 'Content-Type': 'text/plain' }).end(`${err.message}\n`)
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', err => reject(new LogdiskError('BAD_ARGUMENT', `cannot serve metrics at ${address}: ${(err as NodeJS.ErrnoException).code ?? err.message}`, err)))
    server.listen(port, host, () => resolve())
  })
  server.unref()
  const bound = server.address()
  const shown = typeof bound === 'object' && bound ? `${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${bound.port}` : address
  return {
    address: shown,
    close: () => new Promise(resolve => {
      server.closeAllConnections?.()
      server.close(() => resolve())
    })
  }
}
