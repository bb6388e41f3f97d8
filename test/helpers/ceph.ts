import { spawn } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import type { S3Settings } from '../../src/archive/s3'
import { ROOT } from './paths'

/**
 * A real object store for tests: a one-node Ceph cluster (one monitor, one OSD on MemStore, one
 * radosgw: Debian 12's Ceph 16.2 packages, which `make test` installs through
 * scripts/install-deps.sh) on 127.0.0.1, started by scripts/ceph/start-rgw.sh on free ports
 * with its own state directory under CEPH_TEST_ROOT, and its own random S3 keys.
 *
 * Nothing leaks: `stop` stops exactly the daemons of this cluster (by their pid files) and
 * removes its state; a watchdog started with the cluster does the same once the test process
 * is gone however it ended (kill -9 included); and every start first stops the clusters that a
 * dead test process left behind (a machine reset in the middle, say).
 *
 * Unlike s3rver, radosgw checks SigV4 signatures, honours If-None-Match on PUT, pages listings
 * at 1000 keys, and stores objects in RADOS (4 MiB stripes), as a production Ceph does.
 */
export interface CephGateway {
  /** http://127.0.0.1:<port> */
  endpoint: string
  /** Settings that reach this gateway with valid keys and small timeouts. */
  settings: S3Settings
  /** The cluster's state directory (conf, logs). */
  state: string
  /** Seconds from nothing to an S3 user that can create buckets. */
  startSeconds: number
  /** Creates a bucket (path-style); names must be unique within the gateway. */
  createBucket: (bucket: string) => Promise<void>
  /** Reads an object's bytes and metadata behind any target's back. */
  rawGet: (bucket: string, key: string) => Promise<{ data: Buffer, metadata: Record<string, string> }>
  /** Writes an object's bytes and metadata behind any target's back. */
  rawPut: (bucket: string, key: string, data: Buffer, metadata?: Record<string, string>) => Promise<void>
  /** Stops radosgw only (the endpoint refuses connections); the objects stay in the OSD. */
  stopGateway: () => Promise<void>
  /** Starts radosgw again on the same port; resolves once it answers. */
  startGateway: () => Promise<void>
  /** Stops every daemon of the cluster and removes its state. Safe to call twice. */
  stop: () => Promise<void>
}

/** Where clusters live: one directory each, named <owner pid>-<random>. */
export const CEPH_TEST_ROOT = path.join(os.tmpdir(), 'logdisk-ceph-tests')
/** scripts/ceph of this checkout. */
const SCRIPTS = path.join(ROOT, 'scripts', 'ceph')
const START_TIMEOUT_MS = 120_000

/** Why Ceph cannot run here, or undefined when it can. */
export function cephMissing (): string | undefined {
  for (const bin of ['ceph-mon', 'ceph-osd', 'radosgw', 'radosgw-admin', 'monmaptool', 'ceph']) {
    const found = (process.env.PATH ?? '/usr/bin:/bin').split(':').some(dir => {
      try { fs.accessSync(path.join(dir, bin), fs.constants.X_OK); return true } catch { return false }
    })
    if (!found) return `${bin} is missing: run bash scripts/install-deps.sh (make test does)`
  }
  if (process.getuid?.() !== 0) return 'the Ceph test cluster needs root'
  return undefined
}

interface Ran { code: number | null, out: string }

function runScript (script: string, env: Record<string, string>, timeoutMs: number): Promise<Ran> {
  return new Promise(resolve => {
    const child = spawn('bash', [path.join(SCRIPTS, script)], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', d => { out += d })
    child.stderr.on('data', d => { out += d })
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('close', code => { clearTimeout(timer); resolve({ code, out }) })
  })
}

function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Stops the clusters whose owning test process is gone (its watchdog did not get to it). */
export async function sweepStaleClusters (): Promise<string[]> {
  const swept: string[] = []
  let entries: string[] = []
  try { entries = fs.readdirSync(CEPH_TEST_ROOT) } catch { return swept }
  for (const entry of entries) {
    const state = path.join(CEPH_TEST_ROOT, entry)
    const owner = Number(entry.split('-')[0])
    if (!Number.isInteger(owner) || owner <= 0 || alive(owner)) continue
    await runScript('stop-rgw.sh', { STATE: state }, 30_000)
    fs.rmSync(state, { recursive: true, force: true })
    swept.push(state)
  }
  return swept
}

/** `n` distinct free ports on 127.0.0.1 (bound by the OS, then released). */
export async function freePorts (n: number): Promise<number[]> {
  const servers: net.Server[] = []
  const ports: number[] = []
  for (let i = 0; i < n; i++) {
    const server = net.createServer()
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    servers.push(server)
    ports.push((server.address() as net.AddressInfo).port)
  }
  for (const s of servers) await new Promise<void>(resolve => s.close(() => resolve()))
  return ports
}

function tail (file: string, lines = 15): string {
  try {
    return fs.readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join('\n')
  } catch {
    return `(no ${path.basename(file)})`
  }
}

async function waitHttp (port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const ok = await new Promise<boolean>(resolve => {
      const socket = net.connect(port, '127.0.0.1')
      let got = ''
      socket.setTimeout(2000, () => { socket.destroy(); resolve(false) })
      socket.on('connect', () => socket.write('GET / HTTP/1.0\r\n\r\n'))
      socket.on('data', d => { got += d; if (got.startsWith('HTTP/1')) { socket.destroy(); resolve(true) } })
      socket.on('error', () => resolve(false))
      socket.on('close', () => resolve(got.startsWith('HTTP/1')))
    })
    if (ok) return
    if (Date.now() > deadline) throw new Error(`radosgw on 127.0.0.1:${port} did not answer in ${timeoutMs} ms`)
    await new Promise(resolve => setTimeout(resolve, 200))
  }
}

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'

/**
 * Starts a cluster (about 3 s here once the packages are installed). Throws with the logs'
 * tails when it does not come up in two minutes, after stopping what did start.
 */
export async function startCeph (): Promise<CephGateway> {
  const missing = cephMissing()
  if (missing !== undefined) throw new Error(`cannot start the Ceph test cluster: ${missing}`)
  await sweepStaleClusters()
  fs.mkdirSync(CEPH_TEST_ROOT, { recursive: true })
  const accessKeyId = `ld${crypto.randomBytes(8).toString('hex')}`
  const secretAccessKey = crypto.randomBytes(20).toString('hex')
  let lastError = ''
  for (let attempt = 1; attempt <= 2; attempt++) {
    const state = path.join(CEPH_TEST_ROOT, `${process.pid}-${crypto.randomBytes(4).toString('hex')}`)
    const [rgwPort, monPort] = await freePorts(2)
    const started = Date.now()
    const env = {
      STATE: state,
      RGW_PORT: String(rgwPort),
      MON_PORT: String(monPort),
      OWNER_PID: String(process.pid),
      S3_ACCESS_KEY: accessKeyId,
      S3_SECRET_KEY: secretAccessKey,
      START_TIMEOUT_S: String(START_TIMEOUT_MS / 1000)
    }
    const r = await runScript('start-rgw.sh', env, START_TIMEOUT_MS + 10_000)
    if (r.code !== 0 || !r.out.includes('ready ')) {
      lastError = `start-rgw.sh exited ${String(r.code)}:\n${r.out.trim()}\n--- mon.a.log\n${tail(path.join(state, 'log/mon.a.log'))}\n` +
        `--- osd.0.log\n${tail(path.join(state, 'log/osd.0.log'))}\n--- client.rgw.a.log\n${tail(path.join(state, 'log/client.rgw.a.log'))}`
      await runScript('stop-rgw.sh', { STATE: state }, 30_000)
      continue // a port taken between freePorts and the bind: try once more on other ports
    }
    return gateway(state, rgwPort, accessKeyId, secretAccessKey, (Date.now() - started) / 1000)
  }
  throw new Error(`the Ceph test cluster did not start: ${lastError}`)
}

function gateway (state: string, port: number, accessKeyId: string, secretAccessKey: string, startSeconds: number): CephGateway {
  const endpoint = `http://127.0.0.1:${port}`
  const conf = path.join(state, 'ceph.conf')
  const client = new S3Client({
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId, secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED'
  })
  let stopped = false
  const rgwPidFile = path.join(state, 'run/client.rgw.a.pid')
  return {
    endpoint,
    state,
    startSeconds,
    settings: {
      endpoint,
      region: 'us-east-1',
      accessKeyId,
      secretAccessKey,
      maxAttempts: 2,
      connectionTimeoutMs: 2000,
      socketTimeoutMs: 20_000
    },
    createBucket: async bucket => { await client.send(new CreateBucketCommand({ Bucket: bucket })) },
    rawGet: async (bucket, key) => {
      const out = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))
      const bytes = await out.Body!.transformToByteArray()
      return { data: Buffer.from(bytes), metadata: out.Metadata ?? {} }
    },
    rawPut: async (bucket, key, data, metadata) => {
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: data, ContentLength: data.length, Metadata: metadata }))
    },
    stopGateway: async () => {
      const pid = Number(fs.readFileSync(rgwPidFile, 'utf8'))
      process.kill(pid, 'SIGTERM')
      const deadline = Date.now() + 15_000
      while (alive(pid) && fs.existsSync(`/proc/${pid}/cmdline`) && fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(state)) {
        if (Date.now() > deadline) { process.kill(pid, 'SIGKILL'); break }
        await new Promise(resolve => setTimeout(resolve, 100))
      }
      fs.rmSync(rgwPidFile, { force: true })
    },
    startGateway: async () => {
      await new Promise<void>((resolve, reject) => {
        const child = spawn('radosgw', ['-c', conf, '-n', 'client.rgw.a'], { stdio: 'ignore' })
        child.on('error', reject)
        child.on('close', code => code === 0 ? resolve() : reject(new Error(`radosgw exited ${String(code)}: ${tail(path.join(state, 'log/client.rgw.a.log'))}`)))
      })
      await waitHttp(port, 60_000)
    },
    stop: async () => {
      if (stopped) return
      stopped = true
      client.destroy()
      const r = await runScript('stop-rgw.sh', { STATE: state }, 60_000)
      if (r.code !== 0) throw new Error(`stop-rgw.sh exited ${String(r.code)}: ${r.out}`)
    }
  }
}
