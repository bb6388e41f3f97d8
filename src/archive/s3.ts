import crypto from 'node:crypto'
import type * as S3Sdk from '@aws-sdk/client-s3'
import { LogdiskError } from '../errors'
import { checkName, checkPrefix, isValidName, oneLine, TMP_MARK } from './names'
import type { ArchiveFaults, ArchiveTarget, ExclusiveCreate, TargetRole } from './target'

/**
 * How to reach an S3-compatible service. Every field is optional; `resolveS3Settings` fills
 * the gaps from the usual AWS environment variables, then from the defaults below. The store's
 * config passes these as an options object; a field set here wins over the environment.
 */
export interface S3Settings {
  /** e.g. http://127.0.0.1:9000. Env: AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL. Unset: AWS. */
  endpoint?: string
  /** Env: AWS_REGION, then AWS_DEFAULT_REGION. Default us-east-1. */
  region?: string
  /** Env: AWS_ACCESS_KEY_ID. Required (here or in the env): no other credential source is probed. */
  accessKeyId?: string
  /** Env: AWS_SECRET_ACCESS_KEY. Required with accessKeyId. */
  secretAccessKey?: string
  /** Env: AWS_SESSION_TOKEN (temporary credentials). */
  sessionToken?: string
  /** Path-style URLs (http://host/bucket/key). Default: true when an endpoint is set, as most
   *  S3-compatible servers (MinIO, Ceph, s3rver) need; false for AWS itself. */
  forcePathStyle?: boolean
  /** Tries per request, the first included (SDK standard retry mode). Default 3. */
  maxAttempts?: number
  /** Time to establish a TCP connection before the try fails. Default 5000 ms. */
  connectionTimeoutMs?: number
  /** Time a connection may stay silent mid-request before the try fails. Default 30000 ms. */
  socketTimeoutMs?: number
}

export type ResolvedS3Settings = Required<Omit<S3Settings, 'endpoint' | 'sessionToken'>> &
Pick<S3Settings, 'endpoint' | 'sessionToken'>

export interface S3TargetOptions {
  /** Test-only fault injection (see ArchiveFaults). */
  faults?: ArchiveFaults
  /**
   * How long the emulated `putIfAbsent` (a server that ignores If-None-Match) waits between its
   * PUT and the read-back that decides who won. Default 1000 ms.
   */
  settleMs?: number
  /** What the bucket is to the store, for messages (default: archive). */
  role?: TargetRole
}

/** The emulated putIfAbsent's default wait (see S3TargetOptions.settleMs). */
export const DEFAULT_SETTLE_MS = 1000

/**
 * The SDK takes 150-400 ms to load: loaded on the first S3Target, so the CLI and directory
 * targets never pay for it.
 */
let sdk: typeof S3Sdk | undefined
function loadSdk (): typeof S3Sdk {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  sdk ??= require('@aws-sdk/client-s3') as typeof S3Sdk
  return sdk
}

/** Object metadata key holding the sha256 (hex) of the object's bytes. */
export const SHA256_METADATA_KEY = 'logdisk-sha256'

const NETWORK_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH',
  'ENETUNREACH', 'EPIPE', 'ECONNABORTED', 'EPROTO', 'ERR_SSL_WRONG_VERSION_NUMBER'
])

/** Merges explicit settings over the AWS environment variables over defaults. */
export function resolveS3Settings (target: string, settings: S3Settings = {}, env: NodeJS.ProcessEnv = process.env): ResolvedS3Settings {
  const pick = (...values: Array<string | undefined>): string | undefined => values.find(v => v !== undefined && v !== '')
  const endpoint = pick(settings.endpoint, env.AWS_ENDPOINT_URL_S3, env.AWS_ENDPOINT_URL)
  if (endpoint !== undefined) {
    let url: URL | undefined
    try { url = new URL(endpoint) } catch { url = undefined }
    if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
      throw new LogdiskError('BAD_ARGUMENT', `${target}: endpoint ${JSON.stringify(endpoint)} is not an http:// or https:// URL (check AWS_ENDPOINT_URL)`)
    }
  }
  const accessKeyId = pick(settings.accessKeyId, env.AWS_ACCESS_KEY_ID)
  const secretAccessKey = pick(settings.secretAccessKey, env.AWS_SECRET_ACCESS_KEY)
  if (accessKeyId === undefined || secretAccessKey === undefined) {
    throw new LogdiskError('BAD_ARGUMENT', `${target}: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the archive credentials in the store's config)`)
  }
  const positive = (name: string, value: number | undefined, fallback: number): number => {
    const v = value ?? fallback
    if (!Number.isInteger(v) || v <= 0) throw new LogdiskError('BAD_ARGUMENT', `${target}: ${name} must be a positive integer (got ${String(value)})`)
    return v
  }
  return {
    endpoint,
    region: pick(settings.region, env.AWS_REGION, env.AWS_DEFAULT_REGION) ?? 'us-east-1',
    accessKeyId,
    secretAccessKey,
    sessionToken: pick(settings.sessionToken, env.AWS_SESSION_TOKEN),
    forcePathStyle: settings.forcePathStyle ?? endpoint !== undefined,
    maxAttempts: positive('maxAttempts', settings.maxAttempts, 3),
    connectionTimeoutMs: positive('connectionTimeoutMs', settings.connectionTimeoutMs, 5000),
    socketTimeoutMs: positive('socketTimeoutMs', settings.socketTimeoutMs, 30_000)
  }
}

/**
 * An ArchiveTarget in an S3-compatible bucket, objects at `<prefix>/<name>`.
 *
 * put: PutObject `<prefix>/<name>.tmp-<random>` with Content-MD5 (the server refuses bytes
 * damaged on the way) and the data's sha256 in metadata; check the returned ETag against the
 * MD5 where S3 defines it as one (no SSE-KMS/SSE-C); CopyObject it to `<prefix>/<name>` (S3
 * publishes a copy atomically: readers see the old object or the new one); HeadObject the
 * published object and check its length and sha256 metadata; delete the temporary object. A
 * crash before the copy leaves only the temporary object, which list/has/get ignore.
 *
 * get: GetObject, then the sha256 of the bytes must match the sha256 metadata (CORRUPT if
 * not); an object without that metadata (not written by logdisk) is returned as it is.
 *
 * The bucket must exist; the first operation checks it (HeadBucket) so a missing bucket, a
 * refused key or an unreachable endpoint is reported as such. Requests fail after
 * connectionTimeoutMs / socketTimeoutMs and maxAttempts tries: an unreachable target is an
 * IO error in seconds, never a hang. Objects are sent in one PutObject (up to 5 GiB).
 */
export class S3Target implements ArchiveTarget {
  readonly bucket: string
  readonly prefix: string
  private readonly settings: ResolvedS3Settings
  private readonly faults: ArchiveFaults
  private readonly role: TargetRole
  private readonly sdk: typeof S3Sdk
  private readonly client: S3Sdk.S3Client
  private readonly settleMs: number
  private bucketChecked: Promise<void> | undefined
  private exclusive: Promise<ExclusiveCreate> | undefined

  constructor (bucket: string, prefix: string, settings: ResolvedS3Settings, options: S3TargetOptions = {}) {
    this.bucket = bucket
    this.prefix = prefix.replace(/^\/+|\/+$/g, '')
    this.settings = settings
    this.faults = options.faults ?? {}
    this.settleMs = options.settleMs ?? DEFAULT_SETTLE_MS
    this.role = options.role ?? 'archive'
    // The SDK warns on stderr, once per process, that its 2027 releases will need Node 22: noise
    // in a CLI whose errors are one line. Honour an explicit setting of the variable.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
    this.sdk = loadSdk()
    this.client = new this.sdk.S3Client({
      endpoint: settings.endpoint,
      region: settings.region,
      forcePathStyle: settings.forcePathStyle,
      credentials: {
        accessKeyId: settings.accessKeyId,
        secretAccessKey: settings.secretAccessKey,
        ...(settings.sessionToken !== undefined ? { sessionToken: settings.sessionToken } : {})
      },
      maxAttempts: settings.maxAttempts,
      requestHandler: { connectionTimeout: settings.connectionTimeoutMs, socketTimeout: settings.socketTimeoutMs },
      // We verify with Content-MD5 and our own sha256; the SDK's default CRC32 trailers are
      // not understood by every S3-compatible server.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED'
    })
  }

  describe (): string {
    const where = this.settings.endpoint !== undefined ? `at ${this.settings.endpoint}` : `in AWS region ${this.settings.region}`
    return `${this.role} s3://${this.bucket}/${this.prefix} ${where}`
  }

  async put (name: string, data: Buffer): Promise<void> {
    checkName(this, name)
    await this.checkBucket()
    const key = this.key(name)
    const tmpKey = `${key}${TMP_MARK}${crypto.randomBytes(6).toString('hex')}`
    const sha = crypto.createHash('sha256').update(data).digest('hex')
    const md5 = crypto.createHash('md5').update(data).digest()
    let body = data
    if (this.faults.corruptTmpWrite === true) {
      body = Buffer.from(data.length > 0 ? data : Buffer.alloc(1))
      body[Math.floor(data.length / 2)] ^= 0xff
    }
    let leaveTmp = false
    try {
      const sent = await this.send(`put ${name}`, undefined, () => this.client.send(new this.sdk.PutObjectCommand({
        Bucket: this.bucket,
        Key: tmpKey,
        Body: body,
        ContentLength: body.length,
        ContentMD5: md5.toString('base64'),
        ContentType: 'application/octet-stream',
        Metadata: { [SHA256_METADATA_KEY]: sha }
      })))
      const etag = (sent.ETag ?? '').replace(/"/g, '').toLowerCase()
      const etagIsMd5 = sent.ServerSideEncryption !== 'aws:kms' && sent.ServerSideEncryption !== 'aws:kms:dsse' &&
        sent.SSECustomerAlgorithm === undefined && /^[0-9a-f]{32}$/.test(etag)
      if (etagIsMd5 && etag !== md5.toString('hex')) {
        throw new LogdiskError('CORRUPT', `${this.describe()}: put ${name}: the server stored bytes with MD5 ${etag}, sent ${md5.toString('hex')}: damaged on the way, try again`)
      }
      if (this.faults.failAfterTmpWrite === true) {
        leaveTmp = true // a crash leaves the temporary object: so does the fault
        throw new LogdiskError('IO', `${this.describe()}: injected fault failAfterTmpWrite: stopped before publishing ${name}`)
      }
      await this.send(`put ${name} (publish)`, undefined, () => this.client.send(new this.sdk.CopyObjectCommand({
        Bucket: this.bucket,
        Key: key,
        CopySource: `${this.bucket}/${tmpKey.split('/').map(encodeURIComponent).join('/')}`,
        MetadataDirective: 'COPY'
      })))
      const head = await this.send(`put ${name} (verify)`, undefined, () => this.client.send(new this.sdk.HeadObjectCommand({ Bucket: this.bucket, Key: key })))
      const storedSha = head.Metadata?.[SHA256_METADATA_KEY]
      if (head.ContentLength !== data.length || storedSha !== sha) {
        throw new LogdiskError('CORRUPT', `${this.describe()}: put ${name}: published object has ${String(head.ContentLength)} bytes ` +
          `with sha256 ${String(storedSha)}, expected ${data.length} with ${sha}`)
      }
    } finally {
      if (!leaveTmp) {
        await this.client.send(new this.sdk.DeleteObjectCommand({ Bucket: this.bucket, Key: tmpKey })).catch(() => undefined)
      }
    }
  }

  /**
   * atomic: one PutObject with If-None-Match: * (and Content-MD5, and the sha256 metadata); 412
   * means the name was taken. A 409 (AWS: a concurrent conditional write is in progress) is
   * retried a few times. A lost response whose retry then gets 412 reads as false although
   * this call created the object: the lease tells the two apart by the record's nonce.
   * emulated: see ArchiveTarget.exclusiveCreate.
   */
  async putIfAbsent (name: string, data: Buffer): Promise<boolean> {
    checkName(this, name)
    await this.checkBucket()
    const mode = await this.exclusiveCreate()
    const key = this.key(name)
    const sha = crypto.createHash('sha256').update(data).digest('hex')
    const md5 = crypto.createHash('md5').update(data).digest('base64')
    const request = {
      Bucket: this.bucket,
      Key: key,
      Body: data,
      ContentLength: data.length,
      ContentMD5: md5,
      ContentType: 'application/octet-stream',
      Metadata: { [SHA256_METADATA_KEY]: sha }
    }
    if (mode === 'emulated') {
      if (await this.has(name)) return false
      await this.send(`put ${name} (if absent)`, undefined, () => this.client.send(new this.sdk.PutObjectCommand(request)))
      await new Promise(resolve => setTimeout(resolve, this.settleMs))
      // The bytes decide, not a HEAD: s3rver does not even store concurrent PUTs of one key
      // atomically (measured: the bytes of one with the metadata of another), and such a torn
      // object (CORRUPT on get) was created by no one.
      try {
        return (await this.get(name)).equals(data)
      } catch (err) {
        if (err instanceof LogdiskError && (err.code === 'CORRUPT' || err.code === 'NOT_FOUND')) return false
        throw err
      }
    }
    for (let attempt = 1; ; attempt++) {
      try {
        await this.client.send(new this.sdk.PutObjectCommand({ ...request, IfNoneMatch: '*' }))
        break
      } catch (err) {
        const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode
        if (status === 412) return false
        if (status === 409 && attempt < 5) {
          await new Promise(resolve => setTimeout(resolve, 50 * attempt))
          continue
        }
        throw this.error(err, `put ${name} (if absent)`, undefined)
      }
    }
    const head = await this.headOrUndefined(name)
    if (head === undefined || head.ContentLength !== data.length || head.Metadata?.[SHA256_METADATA_KEY] !== sha) {
      throw new LogdiskError('CORRUPT', `${this.describe()}: put ${name} (if absent): the object read back is not the one written`)
    }
    return true
  }

  /**
   * Probes once whether the server honours If-None-Match: * on PUT: creates a hidden object,
   * then tries to create it again. 412 means it does (atomic); a 200 or a refusal of the header
   * (501, 400) means it does not (emulated). Measured: Ceph RGW 16.2 honours it, s3rver 3.7
   * ignores it.
   */
  async exclusiveCreate (): Promise<ExclusiveCreate> {
    this.exclusive ??= this.probeExclusive().catch(err => {
      this.exclusive = undefined
      throw err
    })
    return await this.exclusive
  }

  private async probeExclusive (): Promise<ExclusiveCreate> {
    await this.checkBucket()
    const key = this.key(`probe${TMP_MARK}${crypto.randomBytes(6).toString('hex')}`)
    const body = Buffer.from('logdisk probe: does this server honour If-None-Match?\n')
    await this.send('probe conditional writes', undefined, () => this.client.send(new this.sdk.PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentLength: body.length })))
    try {
      await this.client.send(new this.sdk.PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentLength: body.length, IfNoneMatch: '*' }))
      return 'emulated'
    } catch (err) {
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode
      if (status === 412) return 'atomic'
      if (status === 501 || status === 400) return 'emulated'
      throw this.error(err, 'probe conditional writes', undefined)
    } finally {
      await this.client.send(new this.sdk.DeleteObjectCommand({ Bucket: this.bucket, Key: key })).catch(() => undefined)
    }
  }

  private async headOrUndefined (name: string): Promise<S3Sdk.HeadObjectCommandOutput | undefined> {
    try {
      return await this.send(`has ${name}`, name, () => this.client.send(new this.sdk.HeadObjectCommand({ Bucket: this.bucket, Key: this.key(name) })))
    } catch (err) {
      if (err instanceof LogdiskError && err.code === 'NOT_FOUND') return undefined
      throw err
    }
  }

  async get (name: string): Promise<Buffer> {
    checkName(this, name)
    await this.checkBucket()
    const out = await this.send(`get ${name}`, name, () => this.client.send(new this.sdk.GetObjectCommand({ Bucket: this.bucket, Key: this.key(name) })))
    let data: Buffer
    try {
      const bytes = await out.Body!.transformToByteArray()
      data = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    } catch (err) {
      throw this.error(err, `get ${name}`, name)
    }
    const storedSha = out.Metadata?.[SHA256_METADATA_KEY]
    if (storedSha !== undefined) {
      const sha = crypto.createHash('sha256').update(data).digest('hex')
      if (sha !== storedSha) {
        throw new LogdiskError('CORRUPT', `${this.describe()}: ${name}: the stored bytes (sha256 ${sha.slice(0, 16)}...) do not match their checksum (${storedSha.slice(0, 16)}...)`)
      }
    }
    return data
  }

  async getRange (name: string, offset: number, length: number): Promise<Buffer> {
    checkName(this, name)
    if (length <= 0) return Buffer.alloc(0)
    await this.checkBucket()
    let out
    try {
      out = await this.send(`get ${name}`, name, () => this.client.send(new this.sdk.GetObjectCommand({ Bucket: this.bucket, Key: this.key(name), Range: `bytes=${offset}-${offset + length - 1}` })))
    } catch (err) {
      // 416: the range starts at or past the end: no bytes (the contract's short read).
      if ((err as { cause?: { $metadata?: { httpStatusCode?: number } } }).cause?.$metadata?.httpStatusCode === 416) return Buffer.alloc(0)
      throw err
    }
    try {
      const bytes = await out.Body!.transformToByteArray()
      const data = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
      return data.length > length ? data.subarray(0, length) : data // a server that ignored Range
    } catch (err) {
      throw this.error(err, `get ${name}`, name)
    }
  }

  async has (name: string): Promise<boolean> {
    checkName(this, name)
    await this.checkBucket()
    try {
      await this.send(`has ${name}`, name, () => this.client.send(new this.sdk.HeadObjectCommand({ Bucket: this.bucket, Key: this.key(name) })))
      return true
    } catch (err) {
      if (err instanceof LogdiskError && err.code === 'NOT_FOUND') return false
      throw err
    }
  }

  async list (prefix = ''): Promise<string[]> {
    checkPrefix(this, prefix)
    await this.checkBucket()
    const base = this.key('')
    const names: string[] = []
    let token: string | undefined
    do {
      const page = await this.send('list', undefined, () => this.client.send(new this.sdk.ListObjectsV2Command({
        Bucket: this.bucket,
        Prefix: base + prefix,
        Delimiter: '/',
        ContinuationToken: token
      })))
      for (const object of page.Contents ?? []) {
        const name = (object.Key ?? '').slice(base.length)
        if (isValidName(name)) names.push(name)
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined
    } while (token !== undefined)
    return names.sort()
  }

  async delete (name: string): Promise<void> {
    checkName(this, name)
    await this.checkBucket()
    await this.send(`delete ${name}`, undefined, () => this.client.send(new this.sdk.DeleteObjectCommand({ Bucket: this.bucket, Key: this.key(name) })))
  }

  async close (): Promise<void> {
    this.client.destroy()
  }

  private key (name: string): string {
    return this.prefix === '' ? name : `${this.prefix}/${name}`
  }

  /** Once per target (again after a failure): the bucket exists and the key may use it. */
  private async checkBucket (): Promise<void> {
    this.bucketChecked ??= this.client.send(new this.sdk.HeadBucketCommand({ Bucket: this.bucket })).then(
      () => undefined,
      err => {
        this.bucketChecked = undefined
        if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) throw this.noBucket(err)
        throw this.error(err, 'checking the bucket', undefined)
      })
    return await this.bucketChecked
  }

  /** Runs one SDK call, mapping its failure with `error`. */
  private async send<T> (op: string, name: string | undefined, call: () => Promise<T>): Promise<T> {
    try {
      return await call()
    } catch (err) {
      throw this.error(err, op, name)
    }
  }

  private noBucket (cause: unknown): LogdiskError {
    return new LogdiskError('IO', `${this.describe()}: bucket ${this.bucket} does not exist: create it or check --target and AWS_ENDPOINT_URL`, cause)
  }

  /**
   * Maps an SDK or network failure to the contract's codes with a one-line message. A 404 is
   * NOT_FOUND only for an operation on the object `name`; elsewhere (a put's steps) it is IO.
   */
  private error (err: unknown, op: string, name: string | undefined): LogdiskError {
    if (err instanceof LogdiskError) return err
    const e = err as { name?: string, code?: string, Code?: string, message?: string, $metadata?: { httpStatusCode?: number } }
    const status = e.$metadata?.httpStatusCode
    // HEAD responses carry no error body: the SDK then names the error after the status alone.
    const code = e.Code ?? (e.name !== undefined && e.name !== 'Unknown' ? e.name : (status !== undefined ? `HTTP ${status}` : ''))
    const what = `${this.describe()}: ${op}`
    const detail = oneLine(`${code !== '' ? code + ': ' : ''}${e.message ?? String(err)}`)
    if ((e.code !== undefined && NETWORK_CODES.has(e.code)) || e.name === 'TimeoutError' || (status === undefined && /socket|connect|ECONN/i.test(e.message ?? ''))) {
      return new LogdiskError('IO', `${what}: endpoint unreachable (${e.code ?? e.name}): check AWS_ENDPOINT_URL, the network and that the server is running`, err)
    }
    if (code === 'NoSuchBucket') return this.noBucket(err)
    if (name !== undefined && (code === 'NoSuchKey' || code === 'NotFound' || status === 404)) {
      return new LogdiskError('NOT_FOUND', `${this.describe()}: no archived object ${name}`, err)
    }
    if (code === 'BadDigest' || code === 'InvalidDigest') {
      return new LogdiskError('CORRUPT', `${what}: the server refused the upload's checksum (${code}): damaged on the way, try again`, err)
    }
    if (status === 403 || code === 'AccessDenied' || code === 'InvalidAccessKeyId' || code === 'SignatureDoesNotMatch') {
      return new LogdiskError('IO', `${what}: access denied (${code}): check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the bucket's policy`, err)
    }
    if (status === 301 || code === 'PermanentRedirect' || code === 'AuthorizationHeaderMalformed') {
      return new LogdiskError('IO', `${what}: the bucket is in another region (${code}): set AWS_REGION`, err)
    }
    return new LogdiskError('IO', `${what}: ${detail}${status !== undefined && !detail.includes(`HTTP ${status}`) ? ` (HTTP ${status})` : ''}`, err)
  }
}
