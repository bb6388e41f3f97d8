import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import S3rver from 's3rver'
import type { S3Settings } from '../../src/archive/s3'

/**
 * A real S3-compatible server for tests: s3rver (in process, storing objects as files under a
 * temporary directory), listening on 127.0.0.1 on a free port the OS picks. It refuses an
 * unknown access key id (InvalidAccessKeyId, 403) but does not check SigV4 signatures, so a
 * wrong secret passes.
 */
export interface S3TestServer {
  endpoint: string
  port: number
  bucket: string
  /** Settings that reach this server with valid credentials and small timeouts. */
  settings: S3Settings
  /** The file s3rver keeps the bytes of `key` (in `bucket`) in: tests damage it in place. */
  objectFile: (key: string) => string
  stop: () => Promise<void>
}

// Raw SDK clients made by tests would print the SDK's "Node 22 from 2027" notice (S3Target
// silences it the same way).
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'

export const S3RVER_ACCESS_KEY = 'S3RVER'
export const S3RVER_SECRET_KEY = 'S3RVER'

export async function startS3Server (bucket = 'logdisk-archive'): Promise<S3TestServer> {
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-s3rver-'))
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    directory,
    silent: true,
    configureBuckets: [{ name: bucket, configs: [] }]
  })
  const address = await server.run()
  const endpoint = `http://127.0.0.1:${address.port}`
  return {
    endpoint,
    port: address.port,
    bucket,
    settings: {
      endpoint,
      region: 'us-east-1',
      accessKeyId: S3RVER_ACCESS_KEY,
      secretAccessKey: S3RVER_SECRET_KEY,
      maxAttempts: 2,
      connectionTimeoutMs: 2000,
      socketTimeoutMs: 10_000
    },
    objectFile: key => {
      const parts = key.split('/')
      const last = parts.pop() as string
      return path.join(directory, bucket, ...parts, `${last}._S3rver_object`)
    },
    stop: async () => {
      await server.close()
      fs.rmSync(directory, { recursive: true, force: true })
    }
  }
}

/** A port on 127.0.0.1 that nothing listens on (bound by the OS, then released). */
export async function closedPort (): Promise<number> {
  const server = net.createServer()
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as net.AddressInfo
  await new Promise<void>(resolve => server.close(() => resolve()))
  return port
}

/**
 * A server on 127.0.0.1 that accepts connections and never answers: a hung endpoint. Only
 * timeouts get a client out.
 */
export async function startSilentServer (): Promise<{ endpoint: string, stop: () => Promise<void> }> {
  const sockets = new Set<net.Socket>()
  const server = net.createServer(socket => {
    sockets.add(socket)
    socket.on('error', () => undefined)
    socket.on('close', () => sockets.delete(socket))
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as net.AddressInfo
  return {
    endpoint: `http://127.0.0.1:${port}`,
    stop: async () => {
      for (const socket of sockets) socket.destroy()
      await new Promise<void>(resolve => server.close(() => resolve()))
    }
  }
}
