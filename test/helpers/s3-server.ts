import crypto from 'node:crypto'
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

/**
 * s3rver 3.7.1's putObject pipes the body into a write stream with no 'error' listener, and its
 * deleteObject removes a key's directory once it is empty. A PUT racing the DELETE of the last
 * other key under the same prefix (the lease's records: one host renews while the other
 * releases) then fails to open its file, ENOENT, as an uncaught exception that ended the whole
 * test file (archive-lease.test.ts, once in a suite run, 2026-12-06;
 * test/s3-server-helper.test.ts makes it happen every time). Here the body is read whole (test
 * objects are small) and written with a handled write, the directory made again if a DELETE
 * took it meanwhile; anything else fails that request alone (a 500 the client sees).
 */
interface S3rverObject { bucket: string, key: string, content: Buffer | NodeJS.ReadableStream, metadata: unknown }
interface S3rverStore {
  getResourcePath: (bucket: string, key: string, resource: string) => string
  putMetadata: (bucket: string, key: string, metadata: unknown, md5: string) => Promise<void>
  putObject: (object: S3rverObject) => Promise<{ size: number, md5: string }>
}
const s3rverStore = (require('s3rver/lib/stores/filesystem') as { prototype: S3rverStore }).prototype
s3rverStore.putObject = async function (this: S3rverStore, object: S3rverObject): Promise<{ size: number, md5: string }> {
  let content: Buffer
  if (Buffer.isBuffer(object.content)) {
    content = object.content
  } else {
    const chunks: Buffer[] = []
    for await (const chunk of object.content) chunks.push(Buffer.from(chunk))
    content = Buffer.concat(chunks)
  }
  const file = this.getResourcePath(object.bucket, object.key, 'object')
  for (let attempt = 1; ; attempt++) {
    await fs.promises.mkdir(path.dirname(file), { recursive: true })
    try {
      await fs.promises.writeFile(file, content)
      break
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt === 5) throw err
    }
  }
  const md5 = crypto.createHash('md5').update(content).digest('hex')
  await this.putMetadata(object.bucket, object.key, object.metadata, md5)
  return { size: content.length, md5 }
}

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
