import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { LogdiskError, isLogdiskError } from '../errors'
import { formatBytes } from '../size-text'
import { ARCHIVE_MAGIC, decodeArchive, encodeArchive } from '../archive/codec'
import { encodeFramed, framedHeaderBytes, isFramed, readFramedHeader } from '../archive/framed'
import { crc32c } from '../store/crc'
import { Lease, describeHolder } from '../archive/lease'
import type { ArchiveTarget, ExclusiveCreate } from '../archive/target'
import type { Store } from '../store'
import { CONFIG_FILE } from '../store/config'
import { SEGMENT_HEADER_BYTES } from '../store/format'
import { baselineFiles } from '../store/baseline'
import { silentLogger, type Logger } from '../store/logger'
import { POLICY_FILE } from '../policy/policy'
import { encodeIndexCheckpoint } from './index-checkpoint'
import { MANIFEST_PREFIX, encodeManifest, indexObject, manifestObject, newestManifest, parseManifestName, segmentObject, tailObject, type Manifest, type ShippedPoint, type TailPart } from './format'
import { setLiveGate, writeReplicaState } from './gate'
import { namedObjects, planOldGenerationSweep, stillDeletable } from './old-generations'
import { readReplicaSource, releaseSourceReader } from './source-link'

export const DEFAULT_REPLICATE_INTERVAL_MS = 1000
export const DEFAULT_LAG_WARN_MS = 30_000
/** Objects the newest manifest no longer names are deleted only this long after (a host may be recovering from an older manifest). */
const GARBAGE_GRACE_MS = 60_000
/** How often the holder looks for what older generations left (old-generations.ts): first one grace period after it started. */
const SWEEP_EVERY_MS = 10 * 60_000
/** Manifest versions kept besides the newest. */
const KEEP_MANIFESTS = 4
/**
 * Parts of the current segment before they are replaced by one part from byte 0 (so that a
 * segment that fills slowly does not make every manifest longer, one part per interval).
 */
const MAX_TAIL_PARTS = 32
/** Distinct failures logged in one outage, at most (noteError). */
const MAX_LOGGED = 16
/**
 * How often one shipped segment object is read back and checked (in turn, the oldest first,
 * then again from the start): a damaged one is shipped again from the local copy when that is
 * still the bytes shipped (checkShippedSegment).
 */
export const DEFAULT_CHECK_EVERY_MS = 10 * 60_000
/** How long a stop waits for the lease's release at least (a target that hangs keeps it until it expires). */
const RELEASE_MS = 2000

export interface ReplicatorOptions {
  /** The replicate.target string, for messages, status and replica.json. */
  spec: string
  intervalMs?: number
  lagWarnMs?: number
  /** Take the replica's lease over from a live holder (which is fenced). */
  takeover?: boolean
  log?: Logger
  leaseTtlMs?: number
  /** Keep the gate in <store>/replica.json (default true). */
  persist?: boolean
  /** Start the timer (default true); tests may drive tick() themselves. */
  timer?: boolean
  /**
   * Ship an index checkpoint once this many sealed segments were shipped since the last one
   * (policy replicate.indexEvery; 0: never). Recovery scans at most about this many segments.
   */
  indexEverySegments?: number
  /** How long an object no manifest names any more stays (default 60 s; tests: 0). */
  garbageGraceMs?: number
  /** How often what older generations left is looked for again after the first sweep (default 10 min; tests: 0). */
  sweepEveryMs?: number
  /**
   * One shipped segment object is read back and checked every this many ms, in turn (default
   * DEFAULT_CHECK_EVERY_MS; 0: one every round; Infinity: never). A damaged one is shipped
   * again from the local copy when that is still what was shipped.
   */
  checkEveryMs?: number
}

export const DEFAULT_INDEX_EVERY_SEGMENTS = 4

export interface ReplicationStatus {
  target: string
  /** starting: no lease yet (target unreachable? or, retrying, another holder's lease not expired); shipping/caught-up; fenced: taken over, stopped; error: refused (another holder at the start, another history). */
  state: 'starting' | 'shipping' | 'caught-up' | 'fenced' | 'error' | 'stopped'
  generation: number | null
  manifest: string | null
  /** Where the local log ends (completed appends) and where the replica ends. */
  localPosition: number
  localSeq: number
  shippedPosition: number
  shippedSeq: number
  /** Log bytes not on the replica yet (log positions: a sealed segment's unused end counts). */
  lagBytes: number
  /** Age of the oldest write not on the replica (0 when caught up). */
  lagSeconds: number
  lastShippedAt: string | null
  /** Bytes and objects put since the replicator started. */
  shippedBytes: number
  objectsPut: number
  lastError: string | null
  warnings: string[]
}

/**
 * Continuous replication of one store to one target (docs/REPLICATION.md): every sealed segment
 * whole as soon as it is sealed and durable, the current segment's durable tail in parts every
 * interval, then a manifest version naming them (the commit point). Runs beside the store, on
 * its public API: it reads the log (`readLog`) only up to the index checkpoint (bytes that are
 * fdatasync'd), and passes leave unshipped segments alone (`retainFrom`, fed from here through
 * gate.ts). Writes never wait for it; a target that fails only raises the lag.
 */
export class Replicator {
  private lease: Lease | undefined
  private stopRenew: (() => void) | undefined
  private out: ArchiveTarget | undefined
  private segments: Record<string, string> = {}
  private tails: Record<string, TailPart[]> = {}
  private point: ShippedPoint = { position: 0, seq: 0, entry: null }
  private index: Manifest['index'] = null
  private manifestName: string | null = null
  /** store.json as the newest manifest carries it (a resize changes it: configText). */
  private publishedConfig: string | undefined
  private version = 0
  private timer: NodeJS.Timeout | undefined
  private ticking: Promise<void> | undefined
  private state: ReplicationStatus['state'] = 'starting'
  private lastError: string | null = null
  private lastShippedAt: number | null = null
  private shippedBytes = 0
  private objectsPut = 0
  private garbage: Array<{ name: string, after: number }> = []
  private warned = false
  private indexWarned = false
  private exclusive: ExclusiveCreate | undefined
  private stopped = false
  /** When the next sweep of what older generations left is due (set when this generation's first manifest is out). */
  private nextSweepAt = Infinity
  private sweepError: string | null = null
  /**
   * Failures logged since the last round that worked: each once per outage. Comparing with the
   * last one only, the renewal's failure and the round's alternated and both were logged every
   * renewal (helper-76's A4). Bounded: messages that never repeat are not all kept.
   */
  private logged = new Set<string>()
  /** sha256 (hex) of the original bytes of each segment object this process shipped. */
  private shippedSha = new Map<string, string>()
  /** When the next shipped segment object is checked, and the segment id checked last. */
  private nextCheckAt = 0
  private checkedLast = -1
  /** stop() began: rounds read no segment object back. */
  private stopping = false
  /** Segments whose object on the replica is damaged and could not be shipped again: id -> the status line. */
  private unrepaired = new Map<string, string>()
  /** A retry of the start met another holder's live lease (waitForLease). */
  private waitingForLease = false
  private readonly log: Logger
  private readonly intervalMs: number
  private readonly graceMs: number
  /** The target as rounds use it: refused once stopped (untilStopped). */
  private readonly io: ArchiveTarget

  private constructor (readonly store: Store, readonly target: ArchiveTarget, readonly opts: ReplicatorOptions) {
    this.io = untilStopped(target, () => this.stopped)
    this.log = opts.log ?? silentLogger
    this.intervalMs = opts.intervalMs ?? DEFAULT_REPLICATE_INTERVAL_MS
    this.graceMs = opts.garbageGraceMs ?? GARBAGE_GRACE_MS
  }

  /**
   * Starts replicating: takes the replica's lease (LEASE_HELD naming the holder unless
   * `takeover`), checks that the replica holds this store's history (a prefix of its log), and
   * publishes this generation's first manifest. An unreachable target does not fail the start:
   * it is retried every interval, and the lag grows meanwhile. What does fail it (LEASE_HELD,
   * IDENTITY, a replica of another history) fails `start` when `strict`.
   */
  static async start (store: Store, target: ArchiveTarget, opts: ReplicatorOptions & { strict?: boolean }): Promise<Replicator> {
    const r = new Replicator(store, target, opts)
    setLiveGate(store.dir, r.gate())
    try {
      await r.begin()
    } catch (err) {
      if (opts.strict !== false && !isLogdiskError(err, 'IO')) {
        setLiveGate(store.dir, undefined)
        await r.dropLease()
        throw err
      }
      r.noteError(err)
    }
    if (opts.timer !== false) {
      r.timer = setInterval(() => { r.tick().catch(() => undefined) }, r.intervalMs)
      r.timer.unref()
    }
    return r
  }

  /** The first segment id passes must leave alone: the oldest one not on the replica whole. */
  private gate (): number {
    let st
    try { st = this.store.logSegments() } catch { return 0 }
    for (const { id, state } of st) {
      if (state === 'current' || this.segments[String(id)] === undefined) return id
    }
    return Infinity
  }

  private async begin (): Promise<void> {
    if (this.lease) return
    // Bytes recovered at open may sit in the page cache only (the process before was killed):
    // synced first, so the replica is never ahead of what survives a power loss here.
    await this.store.flush()
    // Whether this store may write the replica at all is settled before the lease is taken: a
    // takeover refused afterwards would still have fenced the rightful writer.
    const seen = await this.continuable()
    // Above every generation a manifest has, should the lease's records be gone (Lease.acquire).
    const minGeneration = (await this.io.list(MANIFEST_PREFIX)).reduce((most, n) => Math.max(most, parseManifestName(n)?.generation ?? 0), 0) + 1
    const lease = await Lease.acquire(this.target, {
      storeUuid: this.store.config.uuid,
      takeover: this.opts.takeover,
      ttlMs: this.opts.leaseTtlMs,
      minGeneration,
      // A takeover of a lease whose newest record is damaged goes above every generation any
      // object names (a holder's data objects, should its manifests be gone).
      generationsOnRecord: async () => (await this.io.list('')).reduce((most, n) => Math.max(most, parseManifestName(n)?.generation ?? Number(/^g(\d{6})\./.exec(n)?.[1] ?? 0)), 0)
    })
    if (this.stopped) {
      // A round the stop abandoned: nobody would release this lease, and the next start on
      // this host would meet it live until it expired.
      void lease.release().catch(() => undefined)
      throw stoppedError(this.opts.spec)
    }
    try {
      // The holder before may have published more between that look and the acquire.
      const newest = await newestManifest(this.io)
      if (newest && newest.name !== seen) await this.adopt(newest.name, newest.manifest)
    } catch (err) {
      await lease.release().catch(() => undefined)
      throw err
    }
    this.lease = lease
    this.out = lease.fence(this.io)
    this.stopRenew = lease.autoRenew({
      onLost: err => { this.fence(err) },
      onError: err => { this.noteError(err) }
    })
    if (lease.current.replacedDamaged) this.log.warn({ damaged: lease.current.replacedDamaged, generation: lease.generation }, `took the replica ${this.opts.spec} over from a lease whose newest record was damaged, at generation ${lease.generation}, above every one on record; a holder still running is fenced`)
    if (lease.current.tookOverFrom) this.log.warn({ from: describeHolder({ holder: lease.current.tookOverFrom.holder, generation: lease.current.tookOverFrom.generation }) }, `took the replica ${this.opts.spec} over; the former holder is fenced`)
    this.state = 'shipping'
    const from = prev(this.manifestName)
    // This generation's first manifest: what it starts from (a takeover's fence, REPLICATION.md).
    await this.publish(this.point)
    await this.releaseOwnReader()
    // Hosts that were recovering from an older generation's manifest have had the grace period.
    this.nextSweepAt = Date.now() + this.graceMs
    // The first segment object is read back one period after the start: a command that writes
    // an unmounted store (on-store.ts) runs rounds too, and would wait for a whole object.
    this.nextCheckAt = Date.now() + (this.opts.checkEveryMs ?? DEFAULT_CHECK_EVERY_MS)
    this.log.info({ target: this.opts.spec, generation: lease.generation, from }, 'replication started')
  }

  /**
   * A store recovered lazily from this replica that now holds it (failover): its own manifests
   * name every segment object it still reads there, so its reader record (reader-records.ts)
   * has no more to keep, and would keep the manifest it was made from for ever.
   */
  private async releaseOwnReader (): Promise<void> {
    const source = readReplicaSource(this.store.dir)
    if (source?.reader === undefined || source.target !== this.opts.spec) return
    const named = new Set(Object.values(this.segments))
    if (!Object.values(source.segments).every(o => named.has(o))) return
    await releaseSourceReader(this.store.dir, this.io).catch((err: Error) => {
      if (this.stopped) throw err
      this.log.warn({ err: err.message }, 'could not delete this store\'s reader record on the replica')
    })
  }

  /**
   * Refuses a store that cannot write this replica (a clone; a replica of another store or of
   * a history this store does not have; a new replica of a store with a baseline), else adopts
   * the replica's newest manifest; returns its name.
   */
  private async continuable (): Promise<string | undefined> {
    // The writer has everything a damaged manifest described: it ships again from the one before.
    const prev = await newestManifest(this.io, (name, err) => this.log.warn({ manifest: name, err: err.message }, 'the replica\'s newest manifest is damaged; continuing from the one before it (what it described is shipped again)'))
    if (prev) await this.adopt(prev.name, prev.manifest)
    if (fs.existsSync(path.join(this.store.dir, 'clone.json'))) {
      throw new LogdiskError('BAD_ARGUMENT', `${this.store.dir} is a clone: its replica would lack the parent's blocks; promote it first (logdisk promote ${this.store.dir})`)
    }
    if (!prev && fs.existsSync(baselineFiles(this.store.dir).index)) {
      // The log before the baseline may be gone (recycled); the replica carries no baseline.
      throw new LogdiskError('BAD_ARGUMENT', `${this.store.dir} has a baseline (compact --into-baseline), and a new replica cannot be started from a store with one yet: the log it replaced may be gone; replicate a store from before its first baseline merge (a replica keeps the whole log, so merges after replication started are fine)`)
    }
    return prev?.name
  }

  /** Continues from a replica's newest manifest, if it is this store's history. */
  private async adopt (name: string, m: Manifest): Promise<void> {
    const uuid = (m.store as { uuid?: string }).uuid
    if (uuid !== this.store.config.uuid) {
      throw new LogdiskError('IDENTITY', `${this.opts.spec} is the replica of another store (${String(uuid)}), not of ${this.store.dir} (${this.store.config.uuid}); give this store another replicate.target`)
    }
    if (!(await this.holdsPoint(m.point))) {
      throw new LogdiskError('BAD_ARGUMENT', `${this.opts.spec} holds a history this store does not have (its newest manifest ${name}, written by ${m.host} pid ${m.pid} at ${m.writtenAt}, ends at sequence ${m.point.seq}, which this store's log does not end with): ` +
        `another host wrote it since this store was made from it; recover from it again (logdisk create <new store> --from ${this.opts.spec}) or give this store another replicate.target`)
    }
    this.segments = { ...m.segments }
    this.tails = Object.fromEntries(Object.entries(m.tails).map(([k, v]) => [k, [...v]]))
    this.point = m.point
    this.index = m.index ?? null
    this.manifestName = name
    this.publishedConfig = JSON.stringify(m.store)
  }

  /** Whether this store's log contains the replica's last entry as it is there. */
  private async holdsPoint (p: ShippedPoint): Promise<boolean> {
    if (p.seq === 0) return true
    if (this.store.status().index.seq < p.seq) return false
    for await (const e of this.store.entries(p.seq, p.seq)) {
      return p.entry !== null && e.kind === p.entry.kind && e.timeMs === p.entry.timeMs && e.position === p.entry.position
    }
    return false
  }

  /** One shipping round; rounds never overlap (a round still running is what the next call gets). */
  tick (): Promise<void> {
    if (this.ticking) return this.ticking
    this.ticking = this.round().catch(err => { this.noteError(err) }).finally(() => { this.ticking = undefined })
    return this.ticking
  }

  private async round (): Promise<void> {
    if (this.stopped || this.state === 'fenced' || this.state === 'error') return
    if (!this.lease) {
      try {
        await this.begin()
      } catch (err) {
        // A retry (the first start met an unreachable target) that meets a live lease: e.g.
        // this store's daemon killed a moment ago, whose lease the target kept. Refusing is the
        // first start's part (strict, at mount); here it waits for the lease to expire.
        if (!isLogdiskError(err, 'LEASE_HELD') || this.stopped) throw err
        return this.waitForLease(err)
      }
      this.waitingForLease = false
    }
    // Data objects go straight to the target: their names carry this generation, so a late one
    // from a fenced host is never named by the new holder's manifests. The manifest (the
    // commit point) and deletes go through the fence, which reads the lease first.
    const out = this.io
    const gen = this.lease!.generation
    await this.store.checkpoint()
    this.assertRunning()
    // An index checkpoint, taken before the point below is read: it covers no more than P.
    const index = await this.shipIndex(gen)
    const st = this.store.status()
    const S = st.segmentBytes
    // Only durable bytes: the checkpoint covers what was fdatasync'd before it was committed.
    const P = st.index.checkpointPosition
    const seq = st.index.checkpointSeq
    const pSeg = Math.floor(P / S)
    const pOff = P % S
    let changed = false
    for (const { id } of this.store.logSegments()) {
      if (id >= pSeg) break // sealed (or exactly full) and durable
      if (this.segments[String(id)] !== undefined) continue
      const data = await this.store.readLog(id, 0, S)
      const name = segmentObject(gen, id)
      // Framed (LDARCH2): a lazily recovered store's cold read fetches only the frames it needs.
      await out.put(name, await encodeFramed(data))
      this.shippedSha.set(name, sha256Hex(data))
      this.objectsPut++
      this.shippedBytes += data.length - Math.min(data.length, this.tailEnd(id))
      this.segments[String(id)] = name
      for (const t of this.tails[String(id)] ?? []) this.garbage.push({ name: t.name, after: Date.now() + this.graceMs })
      delete this.tails[String(id)]
      changed = true
    }
    if (pOff >= SEGMENT_HEADER_BYTES && this.segments[String(pSeg)] === undefined) {
      const old = this.tails[String(pSeg)] ?? []
      const consolidate = old.length >= MAX_TAIL_PARTS
      const from = consolidate ? 0 : this.tailEnd(pSeg)
      if (consolidate) {
        for (const t of old) this.garbage.push({ name: t.name, after: Date.now() + this.graceMs })
        this.tails[String(pSeg)] = []
      }
      if (pOff > from) {
        const data = await this.store.readLog(pSeg, from, pOff - from)
        if (data.length !== pOff - from) throw new LogdiskError('IO', `segment ${pSeg} is shorter (${from + data.length} bytes) than its durable end (${pOff})`)
        const name = tailObject(gen, pSeg, from, pOff)
        await out.put(name, await encodeArchive(data))
        this.objectsPut++
        this.shippedBytes += data.length
        this.tails[String(pSeg)] = [...(this.tails[String(pSeg)] ?? []), { name, from, to: pOff }]
        changed = true
      }
    }
    if (index) {
      if (index.position > P) throw new LogdiskError('IO', `index checkpoint ${index.name} covers the log to ${index.position}, past the durable end ${P}`)
      for (const old of this.index ? [this.index.name] : []) this.garbage.push({ name: old, after: Date.now() + this.graceMs })
      this.index = index
      changed = true
    }
    // store.json as of P (configText): a resize that finished since P was read is not on the
    // replica yet (its marker lies after P), and its size is not either (helper-97's A1).
    // Compared too: a manifest whose store.json differed from the store's at its point (one
    // from before this was so) is replaced even when nothing was shipped.
    const config = await this.configText(seq)
    if (changed || seq !== this.point.seq || config !== this.publishedConfig) {
      let entry: ShippedPoint['entry'] = null
      if (seq > 0) for await (const e of this.store.entries(seq, seq)) { entry = { kind: e.kind, timeMs: e.timeMs, position: e.position }; break }
      await this.publish({ position: P, seq, entry }, config)
    }
    this.lastError = null
    this.logged.clear()
    await this.collect()
    await this.sweepOlderGenerations()
    // A shipped segment object read back in turn; a damaged one put again (helper-76).
    await this.checkShippedInTurn()
    this.assertRunning()
    await this.checkLag()
  }

  /**
   * Puts an index checkpoint when enough sealed segments were shipped since the last one
   * (index-checkpoint.ts); returns what the next manifest names, or undefined.
   */
  private async shipIndex (gen: number): Promise<NonNullable<Manifest['index']> | undefined> {
    const every = this.opts.indexEverySegments ?? DEFAULT_INDEX_EVERY_SEGMENTS
    if (every <= 0) return undefined
    const S = this.store.config.segmentBytes
    const since = this.index ? Math.floor(this.index.position / S) : 0
    const sealed = Object.keys(this.segments).filter(id => Number(id) >= since).length
    if (sealed < every) return undefined
    let enc
    try {
      enc = await encodeIndexCheckpoint(this.store.indexRows())
    } catch (err) {
      // A baseline whose versions' log positions are not known: none is shipped (recovery
      // fetches the whole log); said once, not every round.
      if (!isLogdiskError(err, 'NOT_FOUND')) throw err
      if (!this.indexWarned) this.log.warn({ err: err.message }, 'replication: no index checkpoint can be shipped for this store; recovery from the replica fetches the whole log')
      this.indexWarned = true
      return undefined
    }
    if (this.index && enc.position <= this.index.position) return undefined
    const name = indexObject(gen, enc.seq)
    await this.io.put(name, enc.data)
    this.objectsPut++
    this.log.info({ name, seq: enc.seq, rows: enc.rows, bytes: enc.data.length }, 'replication: shipped an index checkpoint')
    return { name, seq: enc.seq, position: enc.position }
  }

  /** Checks the next shipped segment object when one is due (checkEveryMs); whether it was put again. */
  private async checkShippedInTurn (): Promise<boolean> {
    const every = this.opts.checkEveryMs ?? DEFAULT_CHECK_EVERY_MS
    if (!Number.isFinite(every) || Date.now() < this.nextCheckAt || this.stopping) return false
    const ids = Object.keys(this.segments).map(Number).sort((a, b) => a - b)
    if (ids.length === 0) return false
    const id = ids.find(i => i > this.checkedLast) ?? ids[0]
    this.checkedLast = id
    this.nextCheckAt = Date.now() + every
    try {
      return await this.checkShippedSegment(id)
    } catch (err) {
      // The target or the store's copy out of reach: shipping goes on; this one again next time round.
      if (isLogdiskError(err, 'FENCED') || this.stopped) throw err
      const msg = `checking the replica's object of segment ${id} failed: ${(err as Error).message}`
      if (!this.logged.has(msg) && this.logged.size < MAX_LOGGED) {
        this.logged.add(msg)
        this.log.warn({ err: (err as Error).message, segment: id }, 'replication: checking a shipped segment failed; it is checked again next time round')
      }
      return false
    }
  }

  /**
   * Reads segment `id`'s object on the replica back and decodes it (every frame's CRC32C and the
   * whole sha256; on S3 also the checksum kept with the object). A damaged or missing object is
   * put again, under its own name, when the store's copy of the segment is still the bytes it
   * held: their sha256 is the one the object's header records (its header CRC intact) or the one
   * this process shipped it with. The same bytes under the same name: every manifest, reader and
   * clone that names the object reads it again, and nothing it meant changes (docs/REPLICATION.md
   * "Damaged objects"). A segment compacted since (its free headers rewritten, runs punched),
   * recycled, or only on the replica is not put again: the damage is logged once and stays in
   * `status`'s warnings. The target or the store's copy out of reach: nothing is decided (the
   * caller tries again next time round). Returns whether the object was put again.
   */
  private async checkShippedSegment (id: number): Promise<boolean> {
    const key = String(id)
    const name = this.segments[key]
    if (name === undefined) return false
    let why: string
    try {
      await decodeArchive(await this.io.get(name))
      this.unrepaired.delete(key)
      return false
    } catch (err) {
      if (!isLogdiskError(err, 'CORRUPT') && !isLogdiskError(err, 'NOT_FOUND')) throw err
      why = err.message.replace(`${this.target.describe()}: `, '')
    }
    const held = await this.heldBy(name)
    let local: Buffer | undefined
    let cannot: string | undefined
    if (!this.store.logSegments().some(s => s.id === id && s.state !== 'recycled')) cannot = 'the store no longer has the segment (recycled after it was shipped)'
    else {
      try {
        local = await this.store.readLog(id, 0, this.store.status().segmentBytes)
      } catch (err) {
        if (isLogdiskError(err, 'IO')) throw err
        cannot = `the store's copy cannot be read (${(err as Error).message})`
      }
    }
    if (local !== undefined && cannot === undefined) {
      if (held === undefined) cannot = 'what the object held is not known here (its header is gone too, and another process shipped it)'
      else if (!sameSha(sha256Hex(local), held)) {
        cannot = held.damaged === true
          ? 'its header is damaged, and what is left of it does not say the store\'s copy holds the same bytes (compacted since?)'
          : 'the store\'s copy of the segment changed since it was shipped (compacted)'
      }
    }
    if (cannot !== undefined || local === undefined || held === undefined) {
      const line = `the replica's object ${name} of segment ${id} is damaged (${why}) and cannot be shipped again from here: ${cannot ?? ''}; ` +
        'a store recovered from the replica cannot read that segment (recover with --at a point before it, or from another copy)'
      if (this.unrepaired.get(key) !== line) this.log.error({ object: name, segment: id, err: why }, `replication: ${line}`)
      this.unrepaired.set(key, line)
      return false
    }
    // Through the fence: a holder taken over puts nothing. In the layout it had (an older
    // release's LDARCH1 stays LDARCH1, readable by that release).
    await this.out!.put(name, held.framed ? await encodeFramed(local) : await encodeArchive(local))
    this.assertRunning()
    this.shippedSha.set(name, sha256Hex(local))
    this.objectsPut++
    this.shippedBytes += local.length
    this.unrepaired.delete(key)
    this.log.warn({ object: name, segment: id, err: why }, `replication: the replica's object ${name} of segment ${id} failed its check (${why}); shipped it again from the store's copy, which holds the same bytes`)
    return true
  }

  /**
   * What the segment object `name` holds (the sha256 of its original bytes, hex) and its layout:
   * from its header if that is intact; else from what this process shipped, if it did; else
   * from the header's sha256 field as it is (`damaged`: it held the store's bytes only if at
   * least SHA_MATCH_BYTES of its 32 bytes agree with theirs, since a few damaged bytes leave the
   * rest, and another content's hash would agree in about none).
   */
  private async heldBy (name: string): Promise<{ sha256: string, framed: boolean, damaged?: true } | undefined> {
    let head: Buffer | undefined
    try {
      // By range: a get checks the whole object's checksum (S3), which a damaged body fails.
      const read = async (offset: number, length: number): Promise<Buffer> =>
        this.io.getRange ? await this.io.getRange(name, offset, length) : (await this.io.get(name)).subarray(offset, offset + length)
      head = await read(0, 4096)
      if (isFramed(head)) {
        const bytes = framedHeaderBytes(head)
        return { sha256: readFramedHeader(bytes <= head.length ? head : await read(0, bytes)).sha256.toString('hex'), framed: true }
      }
      if (head.length >= 61 && head.toString('latin1', 0, 8) === ARCHIVE_MAGIC && head.readUInt32LE(57) === crc32c(head.subarray(0, 57))) {
        return { sha256: head.subarray(25, 57).toString('hex'), framed: false }
      }
    } catch (err) {
      if (isLogdiskError(err, 'IO')) throw err
      // Missing or a damaged header: what this process shipped, if it did.
    }
    const sha = this.shippedSha.get(name)
    if (sha !== undefined) return { sha256: sha, framed: true }
    if (head === undefined || head.length < 57) return undefined
    const ldarch1 = [...Buffer.from(ARCHIVE_MAGIC, 'latin1')].filter((c, i) => head![i] === c).length >= 6
    return { sha256: head.subarray(25, 57).toString('hex'), framed: !ldarch1, damaged: true }
  }

  private tailEnd (id: number): number {
    const parts = this.tails[String(id)]
    return parts && parts.length > 0 ? parts[parts.length - 1].to : 0
  }

  /**
   * store.json as of log sequence `seq` (the geometry and size a manifest carries), as compact
   * JSON: its size the volume's at `seq` (Store.sizeAtSettled: from the resize markers after
   * `seq`), not the size now. A round reads its point P, ships, then publishes: a resize that
   * finished in between wrote its marker after P, which the replica lacks, and store.json's new
   * size with it made a store recovered from the replica (create --from) hold a size the volume
   * never had at its log's end: restore --at an earlier point cut to it, and after a discard,
   * a compaction and a shrink its live blocks lay past its end (helper-97's A1). The marker
   * is written before store.json, under the append lock, which the read of the size takes:
   * at every interleaving the size is the one at `seq`, or, with the marker at or before `seq`
   * and store.json not written (a crash, a resize refused after its marker), the size
   * store.json keeps, which the marker says is right (Store.resize).
   */
  private async configText (seq: number): Promise<string> {
    this.assertRunning() // an abandoned round: the store may be closed
    const sizeBytes = await this.store.sizeAtSettled(seq)
    const config = JSON.parse(fs.readFileSync(path.join(this.store.dir, CONFIG_FILE), 'utf8'))
    return JSON.stringify({ ...config, sizeBytes })
  }

  /** Puts the next manifest version: the commit point of everything put before it; `config` is configText(point.seq). */
  private async publish (point: ShippedPoint, config?: string): Promise<void> {
    const gen = this.lease!.generation
    config ??= await this.configText(point.seq)
    const version = this.version + 1
    const name = manifestObject(gen, version)
    const m: Omit<Manifest, 'sha256'> = {
      format: 1,
      generation: gen,
      version,
      previous: this.manifestName,
      writtenAt: new Date().toISOString(),
      host: os.hostname(),
      pid: process.pid,
      store: JSON.parse(config),
      policy: readJson(path.join(this.store.dir, POLICY_FILE)),
      segments: this.segments,
      tails: this.tails,
      point,
      // As of the point, as `store` is: a snapshot taken since lies past the log the replica
      // holds, and a clone from the replica would look for a marker it does not have.
      snapshots: this.store.snapshots().filter(s => s.seq <= point.seq).map(s => ({ name: s.name, id: s.id, seq: s.seq, timeMs: s.timeMs })),
      horizonSeq: this.store.status().history.horizonSeq,
      index: this.index
    }
    // Create-if-absent where the target makes it atomic (two writers of one generation cannot
    // both extend the chain); else a plain put: the emulated one waits a settle time per call,
    // which would set the recovery point objective, and the fenced put checks the lease anyway.
    this.exclusive ??= await this.io.exclusiveCreate()
    // Not before this generation's first: a fenced holder's late manifest may follow the one
    // adopted (the lease's comment), and is harmless: this generation's sort after it.
    if (this.version > 0) await this.assertNewestIsMine()
    const body = encodeManifest(m)
    if (this.exclusive === 'atomic' ? !(await this.out!.putIfAbsent(name, body)) : (await this.out!.put(name, body), false)) {
      throw new LogdiskError('FENCED', `${this.opts.spec}: manifest ${name} was written by someone else: another writer holds this replica at generation ${gen}; this host stops replicating`)
    }
    this.assertRunning() // what follows touches the store (its gate, replica.json)
    this.objectsPut++
    if (this.manifestName !== null) this.garbageManifests()
    this.version = version
    this.manifestName = name
    this.publishedConfig = config
    this.point = point
    this.lastShippedAt = Date.now()
    const gate = this.gate()
    setLiveGate(this.store.dir, gate)
    if (this.opts.persist !== false) {
      try { writeReplicaState(this.store.dir, this.opts.spec, gate) } catch (err) { this.log.warn({ err: (err as Error).message }, 'could not write replica.json') }
    }
  }

  /**
   * FENCED unless the replica's newest manifest is the one this host wrote last. It is not when
   * the replica was put back from an older copy (which lacks objects named since: a manifest
   * written now would name them) or when another host took it over. The lease's own check
   * catches a copy older than its last renewal; this one a younger copy too. A copy put back
   * between this look and the put still goes unnoticed until the next round's look.
   */
  private async assertNewestIsMine (): Promise<void> {
    const newest = (await this.io.list(MANIFEST_PREFIX)).filter(n => parseManifestName(n) !== undefined).sort().at(-1)
    if (newest === this.manifestName) return
    // Taken over: the lease names the new holder, which says more than the manifests.
    await this.lease!.check()
    throw new LogdiskError('FENCED', `${this.opts.spec}: the replica's newest manifest is ${newest ?? 'none'}, not ${String(this.manifestName)}, which this host wrote last: ` +
      'the replica was put back from an older copy? this host stops replicating (mount the store again to ship again from what the replica holds)')
  }

  /** Old manifest versions of this generation (the newest few stay) become garbage. */
  private garbageManifests (): void {
    const gen = this.lease!.generation
    const old = this.version + 1 - KEEP_MANIFESTS
    if (old >= 1) this.garbage.push({ name: manifestObject(gen, old), after: Date.now() + this.graceMs })
  }

  private async collect (): Promise<void> {
    const now = Date.now()
    const due = this.garbage.filter(g => g.after <= now)
    if (due.length === 0) return
    this.garbage = this.garbage.filter(g => g.after > now)
    for (const g of due) await this.out!.delete(g.name).catch(err => { if (isLogdiskError(err, 'FENCED') || this.stopped) throw err })
  }

  /**
   * Deletes what older generations left on the replica (old-generations.ts: their manifests,
   * superseded and unnamed objects; never what this holder's manifests name or a clone of the
   * replica may read), manifests first. Through the fence: a holder taken over deletes nothing
   * more. A failure (the target unreachable) is said once and retried at the next round; it
   * does not stop shipping.
   */
  private async sweepOlderGenerations (): Promise<void> {
    if (Date.now() < this.nextSweepAt) return
    const gen = this.lease!.generation
    if (gen <= 1) {
      this.nextSweepAt = Infinity // no generation before this one
      return
    }
    try {
      const keep = new Set([...namedObjects({ segments: this.segments, tails: this.tails, index: this.index }), ...this.garbage.map(g => g.name)])
      const plan = await planOldGenerationSweep(this.io, gen, keep)
      for (const name of plan.manifests) await this.out!.delete(name)
      // Listed again after the manifests went: a store recovering from one of them meanwhile
      // put its record before it checked that its manifest was still there (reader-records.ts).
      const objects = plan.objects.length > 0 ? await stillDeletable(this.io, plan.objects) : []
      for (const name of objects) await this.out!.delete(name)
      const deleted = plan.manifests.length + objects.length
      if (deleted > 0) {
        this.log.info({ generation: gen, manifests: plan.manifests.length, objects: objects.length, keptForClones: plan.keptForClones, segmentsKept: plan.segmentsKept },
          `replication: deleted ${deleted} objects older generations left on the replica${plan.segmentsKept ? ' (their segment objects kept: a clone record names no manifest that can be read)' : ''}`)
      }
      this.sweepError = null
      this.nextSweepAt = Date.now() + (this.opts.sweepEveryMs ?? SWEEP_EVERY_MS)
    } catch (err) {
      if (isLogdiskError(err, 'FENCED') || this.stopped) throw err
      const msg = (err as Error).message
      if (msg !== this.sweepError) this.log.warn({ err: msg }, 'replication: deleting what older generations left failed; retrying at the next round')
      this.sweepError = msg
    }
  }

  /** A round the stop abandoned ends here, before it touches the store (closed by then). */
  private assertRunning (): void {
    if (this.stopped) throw stoppedError(this.opts.spec)
  }

  private fence (err: LogdiskError): void {
    if (this.state === 'fenced' || this.stopped) return
    this.state = 'fenced'
    this.lastError = err.message
    this.log.error({ err: err.message }, 'replication stopped: this host was fenced from the replica')
  }

  /** Retried every interval; said once (a live holder's renewals change the message every ttl / 3). */
  private waitForLease (err: LogdiskError): void {
    this.lastError = `waiting for the lease to expire, trying again every ${this.intervalMs / 1000} s: ${err.message}`
    if (!this.waitingForLease) this.log.warn({ err: err.message, target: this.opts.spec }, 'replication waits for the lease to expire (writes go on)')
    this.waitingForLease = true
  }

  private noteError (err: unknown): void {
    if (this.stopped) return // an abandoned round's end (stop said what was not shipped)
    const msg = (err as Error)?.message ?? String(err)
    if (isLogdiskError(err, 'FENCED')) return this.fence(err)
    if (isLogdiskError(err, 'LEASE_HELD') || isLogdiskError(err, 'IDENTITY') || isLogdiskError(err, 'BAD_ARGUMENT') || isLogdiskError(err, 'BAD_CONFIG')) {
      this.state = 'error'
      this.lastError = msg
      this.log.error({ err: msg }, 'replication refused')
      return
    }
    if (!this.logged.has(msg) && this.logged.size < MAX_LOGGED) {
      this.logged.add(msg)
      this.log.warn({ err: msg, target: this.opts.spec }, 'replication: shipping failed; retrying every interval (writes go on)')
    }
    this.lastError = msg
  }

  private async checkLag (): Promise<void> {
    const s = await this.status()
    const warnMs = this.opts.lagWarnMs ?? DEFAULT_LAG_WARN_MS
    const behind = warnMs > 0 && s.lagSeconds * 1000 > warnMs
    if (behind && !this.warned) this.log.warn({ lagSeconds: s.lagSeconds, lagBytes: s.lagBytes }, `replica ${this.opts.spec} is behind`)
    if (!behind && this.warned) this.log.info({}, `replica ${this.opts.spec} caught up`)
    this.warned = behind
  }

  async status (): Promise<ReplicationStatus> {
    const st = this.store.status()
    const lagBytes = Math.max(0, st.index.position - this.point.position)
    let lagSeconds = 0
    if (st.index.seq > this.point.seq) {
      try {
        for await (const e of this.store.entries(this.point.seq + 1, this.point.seq + 1)) { lagSeconds = Math.max(0, (Date.now() - e.timeMs) / 1000); break }
      } catch { /* closing */ }
    }
    const warnings: string[] = []
    const warnMs = this.opts.lagWarnMs ?? DEFAULT_LAG_WARN_MS
    for (const line of this.unrepaired.values()) warnings.push(line)
    if (this.state === 'fenced' || this.state === 'error') warnings.push(`replication to ${this.opts.spec} stopped: ${this.lastError ?? ''}`)
    else if (warnMs > 0 && lagSeconds * 1000 > warnMs) warnings.push(`replica ${this.opts.spec} is ${lagSeconds.toFixed(lagSeconds < 10 ? 1 : 0)} s (${formatBytes(lagBytes)}) behind${this.lastError ? `: ${this.lastError}` : ''}`)
    const state = this.state === 'shipping' && lagBytes === 0 ? 'caught-up' : this.state
    return {
      target: this.opts.spec,
      state,
      generation: this.lease?.generation ?? null,
      manifest: this.manifestName,
      localPosition: st.index.position,
      localSeq: st.index.seq,
      shippedPosition: this.point.position,
      shippedSeq: this.point.seq,
      lagBytes,
      lagSeconds: Math.round(lagSeconds * 1000) / 1000,
      lastShippedAt: this.lastShippedAt === null ? null : new Date(this.lastShippedAt).toISOString(),
      shippedBytes: this.shippedBytes,
      objectsPut: this.objectsPut,
      lastError: this.lastError,
      warnings
    }
  }

  /**
   * Stops: with `final`, one last round first, so a clean unmount leaves the replica at the
   * store's last durable point; then the lease is released. Bounded: the round running and the
   * last one get `finalMs` together, the release what is left of it (at least RELEASE_MS). A
   * target that hangs rather than refuses (an S3 endpoint that accepts and never answers: each
   * call ends at the SDK's timeouts, minutes) held an unmount up for 8 minutes (helper-76's A2).
   * What outlasts the bound is abandoned: it may finish in the background, but its next call
   * to the target is refused and it touches the store no more (the caller closes it).
   */
  async stop (opts: { final?: boolean, finalMs?: number } = {}): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    const finalMs = opts.finalMs ?? 10_000
    const deadline = Date.now() + finalMs
    const final = opts.final === true && !this.stopped
    const shipped = await within((async () => {
      await this.ticking?.catch(() => undefined)
      // The last round ships; it reads nothing back (a whole segment object would eat its bound).
      this.stopping = true
      if (final && !this.stopped) await this.tick()
    })(), finalMs)
    this.stopped = true
    this.state = 'stopped'
    setLiveGate(this.store.dir, undefined)
    const released = await within(this.dropLease(), Math.max(RELEASE_MS, deadline - Date.now()))
    if (!final) return
    const { lagBytes } = await this.status().catch(() => ({ lagBytes: 0 }))
    if (lagBytes > 0 || !released) {
      const why = shipped ? (this.lastError ?? 'not shipped yet') : `the replica did not answer within ${finalMs / 1000} s`
      this.log.warn({ lagBytes, lastError: this.lastError, target: this.opts.spec },
        `replication stopped with ${formatBytes(lagBytes)} not on the replica ${this.opts.spec} (${why}): shipped at the next mount` +
        (released ? '' : '; its lease was not released: the next mount waits for it to expire or takes it over'))
    }
  }

  private async dropLease (): Promise<void> {
    this.stopRenew?.()
    const lease = this.lease
    this.lease = undefined
    await lease?.release().catch(() => undefined)
  }
}

/** Whether `work` settled within `ms`; it goes on either way, but nothing waits for it after. */
async function within (work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<boolean>(resolve => { timer = setTimeout(() => resolve(false), Math.max(0, ms)) })
  try {
    return await Promise.race([work.then(() => true, () => true), late])
  } finally {
    clearTimeout(timer)
  }
}

function stoppedError (spec: string): LogdiskError {
  return new LogdiskError('CLOSED', `${spec}: replication was stopped`)
}

/**
 * `target`, whose every call is refused (CLOSED) once `stopped()`, and whose answers that come
 * after are too: a round abandoned by the stop goes no further than the call it was waiting for.
 */
function untilStopped (target: ArchiveTarget, stopped: () => boolean): ArchiveTarget {
  const guard = <A extends unknown[], R>(call: (...args: A) => Promise<R>) => async (...args: A): Promise<R> => {
    if (stopped()) throw stoppedError(target.describe())
    const result = await call.apply(target, args)
    if (stopped()) throw stoppedError(target.describe())
    return result
  }
  const getRange = target.getRange
  return {
    put: guard(target.put),
    get: guard(target.get),
    ...(getRange ? { getRange: guard(getRange) } : {}),
    has: guard(target.has),
    list: guard(target.list),
    delete: guard(target.delete),
    putIfAbsent: guard(target.putIfAbsent),
    exclusiveCreate: guard(target.exclusiveCreate),
    describe: () => target.describe(),
    close: async () => await target.close()
  }
}

/** Of a damaged header's sha256 field, how many of its 32 bytes must agree with the store's copy's (heldBy). */
const SHA_MATCH_BYTES = 24

/** Whether `local` (hex) is what `held` says the object held: equal, or, read from a damaged header, agreeing in SHA_MATCH_BYTES bytes. */
function sameSha (local: string, held: { sha256: string, damaged?: true }): boolean {
  if (held.damaged !== true) return local === held.sha256
  const a = Buffer.from(local, 'hex')
  const b = Buffer.from(held.sha256, 'hex')
  return a.filter((x, i) => x === b[i]).length >= SHA_MATCH_BYTES
}

function sha256Hex (data: Buffer): string {
  return crypto.createHash('sha256').update(data).digest('hex')
}

function prev (name: string | null): string {
  return name === null ? 'an empty replica' : name
}

function readJson (file: string): Record<string, unknown> | null {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'))
  } catch {
    return null
  }
}

export { MANIFEST_PREFIX, parseManifestName }
