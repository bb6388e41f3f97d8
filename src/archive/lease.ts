import crypto from 'node:crypto'
import os from 'node:os'
import { isLogdiskError, LogdiskError } from '../errors'
import { checkName } from './names'
import { isAlive } from '../process-alive'
import type { ArchiveTarget, ExclusiveCreate } from './target'

/**
 * The one-writer lease of a replica (issue 14 item 3): two hosts never write one replica.
 *
 * The lease is a chain of small immutable JSON objects on the target itself, `<name>.v<12
 * digits>`; the newest version is the lease. Every change (acquire, renew, release, takeover)
 * creates the next version with `putIfAbsent`, so of two hosts that change the lease at once
 * exactly one succeeds: a compare-and-swap built on the one conditional write that a directory
 * (link(2)), AWS S3 (since 2024), Ceph RGW and MinIO all provide: create-if-absent
 * (If-None-Match: *). It needs no If-Match, which Ceph 16 RGW honours only for an unquoted ETag
 * (measured: docs/REPLICATION.md) and s3rver not at all. On a server that ignores conditional
 * writes (s3rver) `putIfAbsent` is emulated (HEAD, PUT, settle, read back: ArchiveTarget.
 * exclusiveCreate says which), a documented weaker guarantee; every record says which it had.
 *
 * A record names its holder (host, pid, store uuid, and a random nonce per Lease object), its
 * generation (which goes up by one at every change of holder: acquire after a release or an
 * expiry, and takeover) and its expiry (renewal time + ttl, by the holder's clock; another host
 * counts it expired only `skewMs` after that, by its own clock).
 *
 * Fencing: a holder that was taken over learns it at its next `check`, `renew`, or write
 * through `fence(target)`, whose every put and delete first reads the lease and is refused with
 * FENCED unless it still names this holder at this generation. A write that passed its check
 * just before the takeover can still land (one per concurrent operation, bounded by the
 * target's timeouts): the replication layer makes that harmless by writing immutable objects
 * under generation-qualified names and having the new holder record, at takeover, the state it
 * starts from (docs/REPLICATION.md). Old versions are deleted as new ones are made (the newest
 * two stay).
 *
 * Errors: LEASE_HELD (another holder, named, holds a live lease), FENCED (this holder's lease
 * was taken over, released, is gone, or went back to an older version), CLOSED (after `release`), CORRUPT (a lease record
 * that does not parse), and the target's own (IO, ...).
 */

export interface LeaseHolder {
  host: string
  pid: number
  storeUuid: string
  /** Random per Lease object: tells apart two holders on one host, and a retry from a rival. */
  nonce: string
}

export interface LeaseRecord {
  format: 1
  /** The version object this record is (`<name>.v<version>`). */
  version: number
  /** Up by one at every change of holder. */
  generation: number
  holder: LeaseHolder
  /** When this generation began, and when it was last renewed (holder's clock, ISO 8601). */
  acquiredAt: string
  renewedAt: string
  /** renewedAt + ttlMs: after it (plus the reader's skew allowance) anyone may acquire. */
  expiresAt: string
  ttlMs: number
  /** Given up by its holder: anyone may acquire, with no takeover. */
  released: boolean
  /** The live holder this generation took over from (`takeover`), if any. */
  tookOverFrom?: { holder: LeaseHolder, generation: number }
  /** A takeover of a lease whose newest records were damaged (Lease.acquire): those records. */
  replacedDamaged?: string[]
  /** How the target made this record's creation exclusive. */
  exclusive: ExclusiveCreate
}

export interface LeaseOptions {
  /** The lease's object name stem (default "lease"): versions are `<name>.v<12 digits>`. */
  name?: string
  /** The store this holder writes the replica of. */
  storeUuid: string
  /** Lifetime of a renewal. Default 30 s. */
  ttlMs?: number
  /** Take over a live lease (the holder is known to be gone): it is fenced. */
  takeover?: boolean
  /**
   * The least generation to take: a replica whose lease records were lost (removed, or a copy
   * put back without them) still holds manifests of earlier generations, and a new holder
   * numbering from 1 again collided with them (its first manifest "written by someone else").
   */
  minGeneration?: number
  /**
   * The highest generation any other object on the target was written by (a replica's
   * manifests and data objects carry theirs in their names); asked only by a takeover of a
   * lease whose newest record is damaged, which must go above every generation on record.
   */
  generationsOnRecord?: () => Promise<number>
  /** How far apart two hosts' clocks may be. Default 5 s. */
  skewMs?: number
  /** Holder identity; default os.hostname() and process.pid. */
  host?: string
  pid?: number
  /** The clock (ms since the epoch), for tests. Default Date.now. */
  now?: () => number
}

export const DEFAULT_LEASE_NAME = 'lease'
export const DEFAULT_LEASE_TTL_MS = 30_000
export const DEFAULT_LEASE_SKEW_MS = 5_000
/** How many times acquire and renew re-read and retry when a rival's change got in first. */
const ROUNDS = 8

function versionName (name: string, version: number): string {
  return `${name}.v${String(version).padStart(12, '0')}`
}

function versionsOf (names: string[], name: string): number[] {
  const out: number[] = []
  for (const n of names) {
    if (n.length === name.length + 14 && n.startsWith(`${name}.v`) && /^\d{12}$/.test(n.slice(name.length + 2))) {
      out.push(Number(n.slice(name.length + 2)))
    }
  }
  return out.sort((a, b) => a - b)
}

function checkLeaseName (target: ArchiveTarget, name: string): void {
  if (typeof name !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_-]*$/.test(name)) {
    throw new LogdiskError('BAD_ARGUMENT', `${target.describe()}: bad lease name ${JSON.stringify(name)} (letters, digits, _ and -)`)
  }
  checkName(target, versionName(name, 0))
}

function encode (record: LeaseRecord): Buffer {
  return Buffer.from(JSON.stringify(record, null, 1) + '\n')
}

function decode (target: ArchiveTarget, object: string, data: Buffer): LeaseRecord {
  let r: LeaseRecord
  try {
    r = JSON.parse(data.toString('utf8')) as LeaseRecord
  } catch (err) {
    throw new LogdiskError('CORRUPT', `${target.describe()}: lease record ${object} is not JSON: delete it only if no host uses this replica`, err)
  }
  const ok = r !== null && typeof r === 'object' && r.format === 1 && Number.isSafeInteger(r.version) && Number.isSafeInteger(r.generation) &&
    typeof r.holder?.host === 'string' && Number.isSafeInteger(r.holder?.pid) && typeof r.holder?.storeUuid === 'string' &&
    typeof r.holder?.nonce === 'string' && !Number.isNaN(Date.parse(r.expiresAt)) && !Number.isNaN(Date.parse(r.renewedAt)) &&
    typeof r.released === 'boolean'
  if (!ok) throw new LogdiskError('CORRUPT', `${target.describe()}: lease record ${object} is not a lease record of a known format`)
  return r
}

/** One line naming a holder, for messages. */
/** How messages name a lease: the replica's one-writer lease is named `lease` ("lease lease is held" read as a typo). */
function leaseLabel (name: string): string {
  return name === 'lease' ? 'the lease' : `lease ${name}`
}

export function describeHolder (r: Pick<LeaseRecord, 'holder' | 'generation'>): string {
  return `${r.holder.host} (pid ${r.holder.pid}, store ${r.holder.storeUuid}, generation ${r.generation})`
}

/** The newest lease record on `target`, or undefined when there is none; CORRUPT (one line, naming it and what to do) when it is damaged. */
export async function readLease (target: ArchiveTarget, name = DEFAULT_LEASE_NAME): Promise<LeaseRecord | undefined> {
  checkLeaseName(target, name)
  const state = await readState(target, name)
  if (state.damaged.length > 0) throw damagedError(target, name, state)
  return state.record
}

/**
 * The newest readable record, the highest version number present (the next change creates
 * top + 1), and the versions above that record that are present but damaged (their bytes fail
 * the target's checksum or do not parse), newest first. On a target whose putIfAbsent is
 * emulated a version that reads as CORRUPT is a creation torn by a race that no one won (see
 * ArchiveTarget.exclusiveCreate): it is skipped, as if absent. Elsewhere a damaged newest
 * version means who holds the lease is unknown: callers decide (readLease refuses; a holder
 * whose own record it is renews on; a takeover goes above it: Lease.acquire).
 */
interface LeaseState {
  record: LeaseRecord | undefined
  top: number
  damaged: Array<{ object: string, version: number, why: string }>
}

async function readState (target: ArchiveTarget, name: string): Promise<LeaseState> {
  for (let attempt = 1; ; attempt++) {
    const versions = versionsOf(await target.list(`${name}.v`), name)
    const top = versions.length > 0 ? versions[versions.length - 1] : 0
    const damaged: LeaseState['damaged'] = []
    try {
      for (let i = versions.length - 1; i >= 0; i--) {
        const object = versionName(name, versions[i])
        try {
          return { record: decode(target, object, await target.get(object)), top, damaged }
        } catch (err) {
          if (!isLogdiskError(err, 'CORRUPT')) throw err
          if (await target.exclusiveCreate() === 'emulated') continue
          damaged.push({ object, version: versions[i], why: err.message })
        }
      }
      return { record: undefined, top, damaged }
    } catch (err) {
      // Collected by its holder between our list and get: a newer one exists; look again.
      if (isLogdiskError(err, 'NOT_FOUND') && attempt < ROUNDS) continue
      throw err
    }
  }
}

/** What a damaged newest lease record means to a host that does not hold the lease, in one line. */
function damagedError (target: ArchiveTarget, name: string, state: LeaseState): LogdiskError {
  const newest = state.damaged[0]
  const more = state.damaged.length > 1 ? ` (and ${state.damaged.length - 1} older version${state.damaged.length > 2 ? 's' : ''} after the last readable one)` : ''
  // The target's own line names the target and the object already: only its reason is repeated.
  const why = newest.why.replace(`${target.describe()}: `, '').replace(`${newest.object}: `, '')
  return new LogdiskError('CORRUPT', `${target.describe()}: the newest record of ${leaseLabel(name)}, ${newest.object}, is damaged${more} (${why}): ` +
    'who holds the replica is unknown; if no other host writes this replica, take it over (logdisk mount --takeover: it takes a generation above every one on record, and a holder still running is fenced)')
}

export class Lease {
  readonly target: ArchiveTarget
  readonly name: string
  readonly holder: LeaseHolder
  readonly ttlMs: number
  private readonly now: () => number
  private record: LeaseRecord
  private closed = false
  private readonly stops = new Set<() => void>()

  private constructor (target: ArchiveTarget, name: string, record: LeaseRecord, ttlMs: number, now: () => number) {
    this.target = target
    this.name = name
    this.record = record
    this.holder = record.holder
    this.ttlMs = ttlMs
    this.now = now
  }

  /** This holder's generation: the one every fenced write is checked against. */
  get generation (): number { return this.record.generation }

  /** The record this holder last wrote or checked. */
  get current (): LeaseRecord { return this.record }

  /**
   * Acquires the lease: when there is none, when it was released, when it expired (by more
   * than skewMs on this host's clock), or, with `takeover`, from a live holder (which is fenced
   * from then on). Otherwise LEASE_HELD naming the holder. Of hosts acquiring at once exactly
   * one wins (on an `atomic` target); a takeover only ever replaces the holder it first saw, so
   * two hosts taking over at once do not take it from each other.
   */
  static async acquire (target: ArchiveTarget, options: LeaseOptions): Promise<Lease> {
    const name = options.name ?? DEFAULT_LEASE_NAME
    checkLeaseName(target, name)
    const ttlMs = options.ttlMs ?? DEFAULT_LEASE_TTL_MS
    const skewMs = options.skewMs ?? DEFAULT_LEASE_SKEW_MS
    if (!Number.isSafeInteger(ttlMs) || ttlMs < 100) throw new LogdiskError('BAD_ARGUMENT', `lease ttl ${String(ttlMs)} ms: at least 100 ms`)
    const now = options.now ?? Date.now
    const me: LeaseHolder = {
      host: options.host ?? os.hostname(),
      pid: options.pid ?? process.pid,
      storeUuid: options.storeUuid,
      nonce: crypto.randomBytes(8).toString('hex')
    }
    const exclusive = await target.exclusiveCreate()
    let first = true
    let seen: LeaseRecord | undefined
    for (let round = 1; round <= ROUNDS; round++) {
      const state = await readState(target, name)
      const { record: cur, top } = state
      if (state.damaged.length === 0 && cur !== undefined && cur.holder.nonce === me.nonce) return await Lease.won(target, name, cur, ttlMs, now)
      if (state.damaged.length > 0) {
        // The newest record cannot be read: who holds the lease, and at what generation, is
        // unknown. Only a takeover goes on (docs/REPLICATION.md "A damaged lease record").
        if (options.takeover !== true || !first) throw damagedError(target, name, state)
        first = false
        seen = undefined // the holder is unknown: a rival that wins meanwhile is not taken over in a retry
        const next = await Lease.aboveDamaged(target, options, me, state, ttlMs, now(), exclusive)
        await target.putIfAbsent(versionName(name, next.version), encode(next))
        const after = await readState(target, name)
        if (after.damaged.length === 0 && after.record !== undefined && after.record.holder.nonce === me.nonce) return await Lease.won(target, name, after.record, ttlMs, now)
        continue
      }
      if (first) {
        seen = cur
        first = false
      }
      const live = cur !== undefined && !cur.released && Date.parse(cur.expiresAt) + skewMs >= now()
      if (live && !(options.takeover === true && seen !== undefined && seen.generation === cur.generation)) {
        throw Lease.held(target, name, cur, skewMs)
      }
      const next = acquiredRecord(top + 1, Math.max((cur?.generation ?? 0) + 1, options.minGeneration ?? 0), me, ttlMs, now(), exclusive,
        live ? { tookOverFrom: { holder: cur.holder, generation: cur.generation } } : {})
      await target.putIfAbsent(versionName(name, next.version), encode(next))
      // Whether or not putIfAbsent said so (a lost response reads as "taken"), what counts is
      // whether the newest version is ours.
      const after = await readLease(target, name)
      if (after !== undefined && after.holder.nonce === me.nonce) return await Lease.won(target, name, after, ttlMs, now)
    }
    const cur = await readLease(target, name)
    if (cur !== undefined) throw Lease.held(target, name, cur)
    throw new LogdiskError('IO', `${target.describe()}: could not acquire ${leaseLabel(name)}: it changed ${ROUNDS} times while trying; try again`)
  }

  private static async won (target: ArchiveTarget, name: string, record: LeaseRecord, ttlMs: number, now: () => number): Promise<Lease> {
    const lease = new Lease(target, name, record, ttlMs, now)
    await lease.collect()
    return lease
  }

  /**
   * The record a takeover of a lease with damaged newest versions creates. Its generation is
   * above every generation on record: the newest readable record's, the options' least one, and
   * every other object's on the target (generationsOnRecord), plus one per damaged version (an
   * acquire raises the generation by one over the record before it, or over the manifests', so
   * in the usual case this is above the damaged records' too). Safety does not rest on that
   * alone: a holder that has put anything has its generation on record, and of two holders at
   * one generation that have put nothing exactly one creates its first manifest (putIfAbsent)
   * and the other stops before it puts a data object (docs/REPLICATION.md "A damaged lease
   * record").
   */
  private static async aboveDamaged (target: ArchiveTarget, options: LeaseOptions, me: LeaseHolder, state: LeaseState, ttlMs: number, nowMs: number, exclusive: ExclusiveCreate): Promise<LeaseRecord> {
    const onRecord = Math.max(state.record?.generation ?? 0, (options.minGeneration ?? 1) - 1, options.generationsOnRecord ? await options.generationsOnRecord() : 0)
    return acquiredRecord(state.top + 1, onRecord + state.damaged.length + 1, me, ttlMs, nowMs, exclusive, { replacedDamaged: state.damaged.map(d => d.object) })
  }

  /** `skewMs`: how long after its expiry this host still counts it live (the holder's clock may lag). */
  private static held (target: ArchiveTarget, name: string, r: LeaseRecord, skewMs = 0): LogdiskError {
    // A holder on this host whose process is gone (a daemon killed with -9): say so, since
    // waiting for the expiry or a takeover is then plainly safe.
    const gone = r.holder.host === os.hostname() && !isAlive(r.holder.pid)
    return new LogdiskError('LEASE_HELD', `${target.describe()}: ${leaseLabel(name)} is held by ${describeHolder(r)}, renewed ${r.renewedAt}, ` +
      `expires ${r.expiresAt}${skewMs > 0 ? ` (free ${skewMs / 1000} s later: clock skew)` : ''}: ` + (gone
      ? `pid ${r.holder.pid} no longer runs on this host: wait for the lease to expire or take it over (logdisk mount --takeover)`
      : `stop logdisk on ${r.holder.host}, wait for the lease to expire, or take it over (logdisk mount --takeover) once ${r.holder.host} is gone`))
  }

  /** Reads the lease and throws FENCED unless it is still this holder's, at this generation. */
  async check (): Promise<LeaseRecord> {
    this.assertOpen()
    const cur = this.mineOrDamaged(await readState(this.target, this.name))
    this.assertMine(cur)
    return cur!
  }

  /**
   * The record a holder's checks go by. A damaged newest version that is this holder's own
   * record (no version was made after it) is read as what this holder wrote: it still holds
   * the lease, and its next renewal makes a readable version above it. A damaged version made
   * after this holder's may be a takeover: FENCED.
   */
  private mineOrDamaged (state: LeaseState): LeaseRecord | undefined {
    if (state.damaged.length === 0) return state.record
    const newest = state.damaged[0]
    if (newest.version === this.record.version) return this.record
    if (newest.version < this.record.version) return state.record // went back: assertMine says so
    throw new LogdiskError('FENCED', `${this.target.describe()}: the newest record of ${leaseLabel(this.name)}, ${newest.object}, made after this holder's (version ${this.record.version}), is damaged: ` +
      `another host may have taken the replica over; this host (${describeHolder(this.record)}) stops writing to it (mount the store again, with --takeover if no other host writes this replica)`)
  }

  /** Extends the lease by ttlMs from now (a new version, same generation); FENCED if taken over. */
  async renew (): Promise<LeaseRecord> {
    return await this.change(false)
  }

  /** Gives the lease up: anyone may acquire it next, without takeover. The Lease is closed. */
  async release (): Promise<void> {
    await this.change(true)
    this.closed = true
    for (const stop of this.stops) stop()
  }

  /**
   * Renews every intervalMs (default ttl / 3) in the background (the timer does not keep the
   * process alive). Stops, and calls onLost, when the lease turns out to be taken over; other
   * failures (an unreachable target) go to onError and are retried at the next tick. Returns
   * the function that stops it.
   */
  autoRenew (options: { intervalMs?: number, onLost?: (err: LogdiskError) => void, onError?: (err: unknown) => void } = {}): () => void {
    const intervalMs = options.intervalMs ?? Math.max(50, Math.floor(this.ttlMs / 3))
    let running = false
    const timer = setInterval(() => {
      if (running) return
      running = true
      this.renew().catch(err => {
        if (isLogdiskError(err, 'FENCED') || isLogdiskError(err, 'CLOSED')) {
          stop()
          if (isLogdiskError(err, 'FENCED')) options.onLost?.(err)
        } else {
          options.onError?.(err)
        }
      }).finally(() => { running = false })
    }, intervalMs)
    timer.unref()
    const stop = (): void => {
      clearInterval(timer)
      this.stops.delete(stop)
    }
    this.stops.add(stop)
    return stop
  }

  /**
   * `target` (default: the lease's own) as seen by this holder: every put, putIfAbsent and
   * delete first checks the lease and is refused with FENCED once it was taken over; reads pass
   * through. The lease's own objects cannot be written through it.
   */
  fence (target: ArchiveTarget = this.target): ArchiveTarget {
    return new FencedTarget(target, this)
  }

  private async change (release: boolean): Promise<LeaseRecord> {
    this.assertOpen()
    for (let round = 1; round <= ROUNDS; round++) {
      const state = await readState(this.target, this.name)
      const cur = this.mineOrDamaged(state)
      const top = state.top
      this.assertMine(cur)
      const at = new Date(this.now())
      const next: LeaseRecord = {
        ...cur!,
        version: top + 1,
        renewedAt: at.toISOString(),
        expiresAt: new Date(at.getTime() + (release ? 0 : this.ttlMs)).toISOString(),
        released: release
      }
      await this.target.putIfAbsent(versionName(this.name, next.version), encode(next))
      const after = this.mineOrDamaged(await readState(this.target, this.name))
      if (after !== undefined && after.holder.nonce === this.holder.nonce && after.version === next.version && after.renewedAt === next.renewedAt) {
        this.record = after
        await this.collect()
        return after
      }
      this.assertMine(after)
    }
    throw new LogdiskError('IO', `${this.target.describe()}: could not renew lease ${this.name}: it changed ${ROUNDS} times while trying`)
  }

  private assertOpen (): void {
    if (this.closed) throw new LogdiskError('CLOSED', `${this.target.describe()}: lease ${this.name} (generation ${this.generation}) was released`)
  }

  private assertMine (cur: LeaseRecord | undefined): void {
    const mine = `this host (${describeHolder(this.record)})`
    if (cur === undefined) {
      throw new LogdiskError('FENCED', `${this.target.describe()}: lease ${this.name} is gone (removed by hand?): ${mine} is fenced and may no longer write to the replica`)
    }
    // Versions only go up: an older newest version means the lease's objects were put back
    // from an older copy of the replica, which lacks what this holder shipped since; writing
    // on would publish manifests naming objects the copy does not have.
    if (cur.version < this.record.version || cur.generation < this.record.generation) {
      throw new LogdiskError('FENCED', `${this.target.describe()}: lease ${this.name} went back from version ${this.record.version} (generation ${this.record.generation}) to ${cur.version} (generation ${cur.generation}): ` +
        `the replica was put back from an older copy? ${mine} stops writing to it; mount the store again to ship again from what the replica holds`)
    }
    if (cur.holder.nonce !== this.holder.nonce || cur.generation !== this.record.generation) {
      throw new LogdiskError('FENCED', `${this.target.describe()}: ${leaseLabel(this.name)} was taken over by ${describeHolder(cur)} at ${cur.acquiredAt}: ` +
        `${mine} is fenced and may no longer write to the replica`)
    }
    if (cur.released) {
      throw new LogdiskError('FENCED', `${this.target.describe()}: lease ${this.name} was released at ${cur.renewedAt}: ${mine} may no longer write to the replica`)
    }
  }

  /** Deletes versions older than the previous one (best effort: a later pass retries). */
  private async collect (): Promise<void> {
    try {
      for (const v of versionsOf(await this.target.list(`${this.name}.v`), this.name)) {
        if (v < this.record.version - 1) await this.target.delete(versionName(this.name, v))
      }
    } catch {
      // Left for the next renewal.
    }
  }
}

/** See Lease.fence. */
export class FencedTarget implements ArchiveTarget {
  constructor (readonly inner: ArchiveTarget, readonly lease: Lease) {}

  describe (): string {
    return this.inner.describe()
  }

  async put (name: string, data: Buffer): Promise<void> {
    await this.guard(name)
    await this.inner.put(name, data)
  }

  async putIfAbsent (name: string, data: Buffer): Promise<boolean> {
    await this.guard(name)
    return await this.inner.putIfAbsent(name, data)
  }

  async delete (name: string): Promise<void> {
    await this.guard(name)
    await this.inner.delete(name)
  }

  async get (name: string): Promise<Buffer> { return await this.inner.get(name) }
  async has (name: string): Promise<boolean> { return await this.inner.has(name) }
  async list (prefix?: string): Promise<string[]> { return await this.inner.list(prefix) }
  async exclusiveCreate (): Promise<ExclusiveCreate> { return await this.inner.exclusiveCreate() }
  async close (): Promise<void> { await this.inner.close() }

  private async guard (name: string): Promise<void> {
    if (versionsOf([name], this.lease.name).length === 1) {
      throw new LogdiskError('BAD_ARGUMENT', `${this.describe()}: ${name} is a record of lease ${this.lease.name}: only the lease writes it`)
    }
    await this.lease.check()
  }
}

/** The record an acquire puts: `holder` holds version `version` at `generation` from `atMs` for `ttlMs`. */
function acquiredRecord (version: number, generation: number, holder: LeaseHolder, ttlMs: number, atMs: number, exclusive: ExclusiveCreate, extra: Pick<LeaseRecord, 'tookOverFrom' | 'replacedDamaged'>): LeaseRecord {
  const at = new Date(atMs).toISOString()
  return { format: 1, version, generation, holder, acquiredAt: at, renewedAt: at, expiresAt: new Date(atMs + ttlMs).toISOString(), ttlMs, released: false, ...extra, exclusive }
}
