import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError, fromSystemError, isLogdiskError } from '../errors'
import { OWNER_FILE, ownerRecord, ownerVerdict, readIdentity, readOwnerRecord, type Location, type OwnerRecord } from '../store/identity'
import type { Policy } from '../policy/policy'
import { writeFileAtomic, type StoreConfig } from '../store/config'
import type { Logger } from '../store/logger'
import { segmentFileName } from '../store/format'
import { LOCAL_VOLUME, POOL_FILE, type SegmentHome } from '../store/segment-home'
import type { Store } from '../store'
import { MARKER_FILE, claim, ensureMarker, missingReason, readMarker, release } from './volume-marker'
import { makeDirs } from '../make-dirs'
import { headroomOf, holdsIndex } from '../store/headroom'

/**
 * A store's storage pool (seed 002): directories ("pool volumes"), each with a capacity,
 * assigned to this store or spare. Segments go on assigned volumes that have room; when use
 * crosses `pool.growAt` a spare is assigned ([0050]-[0052]); when it falls under
 * `pool.shrinkAt` the emptiest volume is drained and released to spare ([0053]-[0056]), where
 * another store listing the same directory may take it. With `pool.mode=ask` nothing is
 * assigned by itself: status and the log say what to run.
 *
 * pool.json (in the store) lists the directories: { volumes: [{ dir, id?, internal? }] }; `id`
 * is the volume's marker id, kept so that a volume whose directory is gone is still known. The
 * internal volume is <store>/segments, always assigned, never shared; pool.json records it as
 * "segments", relative to the store, so a store can be moved (older files with an absolute
 * path are read the same way: the internal volume is wherever the store is). A store's
 * segments on an external volume live in <volume>/<store uuid>/, with an owner record
 * (OWNER_FILE) naming the store directory that claimed them: a copy of the store (same uuid)
 * is refused there instead of writing into the original's segments.
 *
 * Opened read-only (status, verify... on a store the user may only read), the pool writes
 * nothing: no pool.json, no probe file, no marker or owner record; a first segment, if the
 * store has none yet, goes to the open's scratch directory.
 */
export { OWNER_FILE } from '../store/identity'
export { filesystemHeadroom } from '../store/headroom'
/** The volume of a read-only open's scratch directory. */
export const SCRATCH_VOLUME = 'scratch'

export interface PoolOpenOptions {
  /** Nothing is written; `scratchDir` takes a first segment if one must exist. */
  readOnly?: { scratchDir: string }
  /** Where the store directory is (identity.ts): owner records on external volumes name it. */
  here?: Location
}
export interface PoolFile {
  volumes: Array<{ dir: string, id?: string, internal?: boolean, capacityBytes?: number, grown?: boolean }>
}

export interface VolumeStatus {
  id: string
  dir: string
  internal: boolean
  state: 'assigned' | 'spare' | 'other-store' | 'missing' | 'read-only'
  capacityBytes: number
  usedBytes: number
  segments: number
  /** pool add only: where it set an unreadable marker aside when it remade it. */
  markerSetAside?: string
}

export interface PoolStatus {
  volumes: VolumeStatus[]
  useFraction: number
  warnings: string[]
}

/** The internal volume, relative to the store directory. */
const INTERNAL_DIR = 'segments'

export class Pool implements SegmentHome {
  /** volume id -> segment ids of this store on it */
  private readonly segmentsOn = new Map<string, Set<number>>()
  private store: Store | undefined
  private warned = new Set<string>()
  private warnings: string[] = []
  private draining = false
  /** The volume being drained: no new segment or copy goes there, unless writes need it. */
  private drainingVolume: string | undefined
  /**
   * Why the running drain must stop: a new segment of the store's writes found room only on
   * the volume being drained and was placed there (place). Writes come before a drain: the
   * drain gives way, not the writer with ENOSPC in a pool that has room.
   */
  private drainYielded: string | undefined

  private constructor (
    readonly storeDir: string,
    private readonly config: StoreConfig,
    private file: PoolFile,
    private policy: Policy,
    private readonly log: Logger,
    private readonly opts: PoolOpenOptions
  ) {}

  /** Opens the pool of a store, making pool.json (the internal volume only) if missing. */
  static open (storeDir: string, config: StoreConfig, policy: Policy, log: Logger, initialDirs: string[] = [], opts: PoolOpenOptions = {}): Pool {
    const file = path.join(storeDir, POOL_FILE)
    let pool: PoolFile
    let fresh = false
    if (fs.existsSync(file)) {
      try {
        pool = JSON.parse(fs.readFileSync(file, 'utf8')) as PoolFile
        if (!Array.isArray(pool?.volumes)) throw new Error('no volumes list')
      } catch (err) {
        throw new LogdiskError('BAD_CONFIG', `${file} is not a valid pool file (${(err as Error).message})`, err)
      }
    } else {
      // Created on other directories (create --pool): the internal volume takes no segments.
      pool = { volumes: [{ dir: INTERNAL_DIR, internal: true, ...(initialDirs.length > 0 ? { capacityBytes: 0 } : {}) }] }
      fresh = true
    }
    // The internal volume is wherever the store is, whatever an older pool.json recorded
    // (an absolute path, before stores could move): rewritten relative by the next writer.
    const legacy = pool.volumes.some(v => v.internal && v.dir !== INTERNAL_DIR)
    for (const v of pool.volumes) if (v.internal) v.dir = path.join(storeDir, INTERNAL_DIR)
    const p = new Pool(storeDir, config, pool, policy, log, opts)
    p.pendingSave = (fresh || legacy) && !opts.readOnly
    for (const dir of initialDirs) p.add(dir, undefined, true)
    p.checkOwners()
    return p
  }

  /** Writes wait for the store's lock (attach): another process may hold the store. */
  private pendingSave = false
  private readonly pendingClaims: string[] = []

  private get readOnly (): boolean {
    return !!this.opts.readOnly
  }

  /**
   * The owner record of this store's directory on each volume assigned to it: claimed when
   * free (or left by this store before it moved), refused (IDENTITY) when another directory
   * with this uuid holds it. Read-only: checked, never written; a conflict is only a warning.
   */
  private checkOwners (): void {
    const here = this.opts.here
    if (!here) return
    for (const e of this.entries()) {
      if (e.internal) continue
      let marker
      try { marker = readMarker(e.dir) } catch { continue }
      if (marker?.assignedTo !== this.config.uuid) continue
      if (this.ownerConflict(e.dir) === undefined) this.pendingClaims.push(e.dir)
    }
  }

  /** Throws IDENTITY (read-only: warns) when another directory with this uuid owns our directory on `volumeDir`. */
  private ownerConflict (volumeDir: string, owner = readOwnerRecord(path.join(volumeDir, this.config.uuid))): OwnerRecord | undefined {
    const here = this.opts.here!
    const verdict = ownerVerdict(owner, here, this.config.uuid)
    if (typeof verdict !== 'object') return undefined
    // Which one is the copy, when the other says it moved from here: "adopt <copy>" alone led
    // a user to adopt this one's original (a hostile test, helper-62).
    const movedFromHere = readIdentity(verdict.other)?.movedFrom?.some(m => m.path === here.path && m.host === here.host) === true
    const text = movedFromHere
      ? `pool volume ${volumeDir} holds the segments of the store at ${verdict.other}, which moved there from here and has this store's identity (${this.config.uuid}): it is the copy now; give it its own identity with: logdisk adopt ${verdict.other} (this one then takes its volumes back)`
      : `pool volume ${volumeDir} holds the segments of the store at ${verdict.other}, which has this store's identity (${this.config.uuid}): one of the two is a copy of the other; give the copy its own identity with: logdisk adopt <copy>`
    if (!this.readOnly) throw new LogdiskError('IDENTITY', text)
    this.warnOnce(`owner:${volumeDir}`, text)
    return owner
  }

  /** Records this store directory as the owner of its directory on `volumeDir` (the store's lock is held). */
  private claimOwner (volumeDir: string): void {
    const here = this.opts.here
    if (!here || this.readOnly) return
    const dir = path.join(volumeDir, this.config.uuid)
    const file = path.join(dir, OWNER_FILE)
    const owner = readOwnerRecord(dir)
    this.ownerConflict(volumeDir, owner) // read once: the conflict check and the claim judge the same record
    if (owner && owner.path === here.path && owner.host === here.host && owner.ino === here.ino) return
    try {
      makeDirs(dir)
      writeFileAtomic(file, JSON.stringify(ownerRecord(this.config.uuid, here), null, 2) + '\n')
    } catch (err) {
      this.log.warn({ volume: volumeDir, err: (err as Error).message }, 'cannot record this store as the owner of its directory on a pool volume')
    }
  }

  attach (store: Store): void {
    this.store = store
    if (this.pendingSave) {
      this.pendingSave = false
      this.save()
    }
    for (const dir of this.pendingClaims.splice(0)) this.claimOwner(dir)
    this.sayMissing(this.missingAtOpen.splice(0))
  }

  setPolicy (policy: Policy): void {
    this.policy = policy
  }

  private save (): void {
    if (this.readOnly) throw new LogdiskError('READ_ONLY', `${path.join(this.storeDir, POOL_FILE)}: the store is open read-only`)
    // The internal volume is recorded relative to the store: a moved store finds it.
    const out: PoolFile = { volumes: this.file.volumes.map(v => v.internal ? { ...v, dir: INTERNAL_DIR } : v) }
    try {
      writeFileAtomic(path.join(this.storeDir, POOL_FILE), JSON.stringify(out, null, 2) + '\n')
    } catch (err) {
      throw fromSystemError(err, `write ${path.join(this.storeDir, POOL_FILE)}`)
    }
  }

  private entries (): Array<{ id: string, dir: string, internal: boolean }> {
    const out = []
    let learned = false
    for (const v of this.file.volumes) {
      if (v.internal) { out.push({ id: LOCAL_VOLUME, dir: v.dir, internal: true }); continue }
      if (!v.id) {
        // pool.json written before ids were kept: learn the id while the marker is readable.
        let marker
        try { marker = readMarker(v.dir) } catch { marker = undefined }
        if (marker) { v.id = marker.id; learned = true }
      }
      out.push({ id: v.id ?? `missing:${v.dir}`, dir: v.dir, internal: false })
    }
    if (learned && !this.readOnly) {
      try { this.save() } catch { /* learned again next time */ }
    }
    return out
  }

  // ---- SegmentHome

  dirOf (volume: string): string {
    if (volume === SCRATCH_VOLUME && this.opts.readOnly) return path.join(this.opts.readOnly.scratchDir, INTERNAL_DIR)
    const entry = this.entries().find(e => e.id === volume)
    if (!entry) throw new LogdiskError('NOT_FOUND', `pool volume ${volume} is not in ${path.join(this.storeDir, POOL_FILE)}`)
    return entry.internal ? entry.dir : path.join(entry.dir, this.config.uuid)
  }

  volumes (): string[] {
    const out = []
    for (const e of this.entries()) {
      if (!e.internal && this.stateOf(e) === 'missing' && !this.warned.has(`missing:${e.dir}`)) {
        // Said when the store opens (this lists the volumes to find segments): name the directory.
        this.warned.add(`missing:${e.dir}`)
        if (this.store) this.sayMissing([e])
        else this.missingAtOpen.push(e)
      }
      if (!e.id.startsWith('missing:')) out.push(e.id)
    }
    return out
  }

  /** Missing volumes the open found, said once the index says what they hold (attach). */
  private readonly missingAtOpen: Array<{ id: string, dir: string }> = []

  /**
   * Names missing volumes in the log: an error only when segments on them cannot be read. Said
   * before the index was read, every pool list, mount and pool remove printed "segments on it
   * cannot be read" for a volume that held none (helper-75's D3).
   */
  private sayMissing (list: Array<{ id: string, dir: string }>): void {
    if (list.length === 0) return
    const counts = this.copyCounts(this.status().volumes, true)
    for (const e of list) {
      const unreadable = counts.onlyOn.get(e.id) ?? 0
      const text = this.missingText(e, unreadable, counts.heldOn.get(e.id) ?? 0)
      if (unreadable > 0) this.log.error({ volume: e.dir }, text)
      else if ((counts.heldOn.get(e.id) ?? 0) > 0) this.log.warn({ volume: e.dir }, text)
      else this.log.info({ volume: e.dir }, text) // status and pool list warn of it
    }
  }

  occupied (segmentId: number, volumes: string[]): void {
    for (const v of volumes) {
      if (!this.segmentsOn.has(v)) this.segmentsOn.set(v, new Set())
      this.segmentsOn.get(v)!.add(segmentId)
    }
  }

  vacated (segmentId: number, volumes: string[]): void {
    for (const v of volumes) this.segmentsOn.get(v)?.delete(segmentId)
  }

  stillSuits (volumes: string[]): boolean {
    if (this.readOnly || volumes.length !== this.policy.mirror) return false
    // The pool's room is not asked again: the segment made ahead already counts as using it.
    // Its filesystem's is: something else may have filled it since, and a segment made ahead
    // is sparse, so it needs that room to fill (taken there, its first write failed with
    // ENOSPC while another volume had room: a hostile test's D1).
    const assigned = new Map(this.status().volumes.filter(v => v.state === 'assigned').map(v => [v.id, v.dir]))
    return volumes.every(v => v !== this.drainingVolume && assigned.has(v) && filesystemRoom(assigned.get(v)!) >= this.config.segmentBytes)
  }

  async place (segmentId: number, opts: { ahead?: boolean } = {}): Promise<string[]> {
    if (this.readOnly) return [SCRATCH_VOLUME]
    // A drain needs the room of every free segment for what it moves: a segment made ahead of
    // its roll waits for the roll (which places it then, away from the volume drained).
    if (opts.ahead === true && this.draining) throw new LogdiskError('BUSY', `the pool of ${this.storeDir} is draining a volume`)
    const copies = this.policy.mirror
    const usable = (): VolumeStatus[] => this.withRoom().filter(v => v.id !== this.drainingVolume).slice(0, copies)
    let chosen = usable()
    if (chosen.length < copies && this.policy['pool.mode'] === 'auto') {
      while (chosen.length < copies && this.assignSpare('no assigned volume has room for a new segment')) chosen = usable()
    }
    if (chosen.length < copies && this.drainingVolume !== undefined) {
      // A drain moving segments off a volume while writes fill the others (an automatic
      // shrink right after a volume was added, under a running writer: test/pool.test.ts
      // "full pool", once in about ten suites) refused the writer with ENOSPC although the
      // volume drained had room. The writer wins; the drain stops before its next segment.
      const withDrained = this.withRoom().slice(0, copies)
      if (withDrained.length === copies) {
        const dir = this.entries().find(e => e.id === this.drainingVolume)?.dir ?? this.drainingVolume
        this.drainYielded ??= `the store's writes needed its room for segment ${segmentId}`
        this.log.warn({ volume: dir, segment: segmentId }, 'a new segment of the writes went to the volume being drained (no other volume had room): the drain stops')
        chosen = withDrained
      }
    }
    if (chosen.length < copies) {
      const what = copies > 1 ? `fewer than ${copies} volumes with room (mirror=${copies})` : 'no volume with room'
      const broken = this.status().volumes.filter(v => v.state === 'missing' || v.state === 'read-only').map(v => `${v.dir} is ${v.state}`)
      const err = new LogdiskError('NO_SPACE', `no space: the pool of ${this.storeDir} has ${what} for a new ${this.config.segmentBytes}-byte segment${broken.length > 0 ? ` (pool volume ${broken.join(', ')})` : ''}; add one with: logdisk pool add ${this.storeDir} DIR --capacity SIZE`)
      // Once per spell of refusals, in the daemon's log: the writer sees only ENOSPC.
      if (!this.warned.has('placement')) {
        this.warned.add('placement')
        this.log.warn({ segment: segmentId }, err.message)
      }
      throw err
    }
    this.warned.delete('placement')
    const ids = chosen.map(v => v.id)
    // Counted from now: a drain that starts while the segment is being created must see it
    // (else it could release the volume under it). The store vacates it if creation fails.
    this.occupied(segmentId, ids)
    this.afterChange() // the reservation already counts the new segment as used
    return ids
  }

  /** How many copies each segment should have (the `mirror` policy). */
  copies (): number {
    return this.policy.mirror
  }

  /** A volume with room for one more copy of segment `id`, not among `exclude` (pool repair). */
  async placeCopy (id: number, exclude: string[]): Promise<string> {
    const usable = (): VolumeStatus | undefined => this.withRoom().find(v => !exclude.includes(v.id) && v.id !== this.drainingVolume)
    let choice = usable()
    if (!choice && this.policy['pool.mode'] === 'auto' && this.assignSpare(`a copy of segment ${id}`)) choice = usable()
    const dirs = exclude.map(v => this.entries().find(e => e.id === v)?.dir ?? v)
    if (!choice) throw new LogdiskError('NO_SPACE', `no pool volume other than ${dirs.join(', ')} has room for a copy of segment ${id}; add one with: logdisk pool add ${this.storeDir} DIR`)
    this.occupied(id, [choice.id]) // reserved, as place() does
    return choice.id
  }

  // ---- accounting

  /** A volume's declared capacity: undefined when it has none, null when its marker cannot be read. */
  private declaredCapacity (e: { dir: string, internal: boolean }): number | undefined | null {
    try {
      return (e.internal ? this.file.volumes.find(v => v.internal)?.capacityBytes : readMarker(e.dir)?.capacityBytes) ?? undefined
    } catch {
      return null
    }
  }

  /** `declared`: declaredCapacity(e); `shared`: the room each volume of this store without one has (sharedRoom). */
  private capacityOf (e: { id: string, dir: string, internal: boolean }, declared: number | undefined | null, shared: Map<string, number>): number {
    if (declared === null) return 0
    if (declared !== undefined) return declared
    const room = shared.get(e.id) ?? this.sharedRoom([e]).get(e.id)
    return room === undefined ? 0 : room + this.usedBytes(e.id)
  }

  /**
   * The room each filesystem under `volumes` (none with a declared capacity) leaves this store's
   * segments: its free space less its headroom and less what the segments still filling there
   * will take (unwrittenBytes), shared out between the volumes on it (keyed by volume
   * id; absent: its filesystem cannot be asked). Two volumes of one filesystem each counted
   * all of its free space: `pool list` showed it twice, and each left out only its own
   * segments still filling, so together they reached into the headroom (a hostile test,
   * helper-49). Other stores and programs on the filesystem are not counted: the headroom is
   * for them.
   */
  private sharedRoom (volumes: Array<{ id: string, dir: string, internal: boolean }>): Map<string, number> {
    const filesystems = new Map<number, { room: number, ids: string[] }>()
    for (const e of volumes) {
      try {
        const dev = fs.statSync(e.dir).dev
        let f = filesystems.get(dev)
        if (f === undefined) {
          const st = fs.statfsSync(e.dir)
          // The store's index beside it keeps its own reserve (headroom.ts INDEX_RESERVE_BYTES).
          f = { room: st.bavail * st.bsize - headroomOf(st.blocks * st.bsize, holdsIndex(e.dir, path.join(this.storeDir, 'index'))), ids: [] }
          filesystems.set(dev, f)
        }
        f.room -= this.unwrittenBytes(e)
        f.ids.push(e.id)
      } catch { /* cannot be asked: no room */ }
    }
    // Dealt out in whole segments, in pool order, the odd bytes to the first: split evenly, a
    // room of one segment gave each volume half of one, and the pool said ENOSPC with a
    // segment's room free (a hostile test, helper-51).
    const out = new Map<string, number>()
    const S = this.config.segmentBytes
    for (const f of filesystems.values()) {
      const room = Math.max(0, f.room)
      const segments = Math.floor(room / S)
      f.ids.forEach((id, i) => {
        const mine = Math.floor(segments / f.ids.length) + (i < segments % f.ids.length ? 1 : 0)
        out.set(id, mine * S + (i === 0 ? room - segments * S : 0))
      })
    }
    return out
  }

  /**
   * Bytes the newest segments on volume `e` (the current one and the one made ahead, still
   * filling) are counted as using but do not take on its filesystem yet. A capacity taken from
   * the filesystem's free space alone counted that part twice, as room and as used: each
   * placement then let the filesystem's headroom shrink by up to two segments (a 96 MiB tmpfs
   * kept 8.6 MiB of its 9.6 MiB headroom, and less on a loaded CI machine). Asked of the
   * filesystem (allocated blocks), so a filesystem that allocates ahead counts right too.
   */
  private unwrittenBytes (e: { id: string, dir: string, internal: boolean }): number {
    const newest = this.sortedOn(e.id).slice(-GROWING_SEGMENTS)
    let unwritten = 0
    for (const id of newest) {
      try {
        const st = fs.statSync(path.join(e.internal ? e.dir : path.join(e.dir, this.config.uuid), segmentFileName(id)))
        unwritten += Math.max(0, this.config.segmentBytes - st.blocks * 512)
      } catch {
        unwritten += this.config.segmentBytes // placed, not made yet
      }
    }
    return unwritten
  }

  private usedBytes (volume: string): number {
    return (this.segmentsOn.get(volume)?.size ?? 0) * this.config.segmentBytes
  }

  /**
   * "pool volume DIR is missing (why): what that means": its directory gone (its segments
   * cannot be read: `segments` of them, if known), or its marker gone or garbled (its
   * segments still read; nothing new goes there until `pool add` remakes the marker).
   */
  /** `unreadable`: its segments with no copy elsewhere (undefined: not known); `held`: all its segments. */
  private missingText (e: { id: string, dir: string }, unreadable: number | undefined, held = 0): string {
    const why = missingReason(e.dir, e.id)
    const what = `pool volume ${e.dir} is missing`
    if (why === undefined || why.kind === 'directory-gone') {
      const lost = unreadable === undefined
        ? 'segments on it cannot be read until it is back'
        : unreadable > 0
          ? `${unreadable} segment(s) on it cannot be read${held > unreadable ? ` (${held - unreadable} more read from their other copies)` : ''}`
          : held > 0 ? `its ${held} segment(s) read from their other copies; run logdisk pool repair ${this.storeDir}` : ''
      return `${what} (${why === undefined ? `the directory or its ${MARKER_FILE} is gone` : 'the directory is gone'})${lost === '' ? '' : `: ${lost}`}`
    }
    const text = why.kind === 'marker-gone'
      ? `its ${MARKER_FILE} is gone`
      : why.kind === 'marker-garbled'
        ? `its ${MARKER_FILE} is unreadable (garbled); remake it with logdisk pool add ${this.storeDir} ${e.dir}`
        : `its ${MARKER_FILE} names another volume (${why.id})`
    // Its files may be there (a marker lost alone) or not (a filesystem unmounted under it).
    const reads = unreadable !== undefined && unreadable > 0
      ? `${unreadable} segment(s) on it cannot be read${held > unreadable ? ` (${held - unreadable} more read from their other copies)` : ''}`
      : 'its segments still read'
    return `${what} (${text}): ${reads}; no new ones go there`
  }

  private stateOf (e: { id: string, dir: string, internal: boolean }): VolumeStatus['state'] {
    if (!fs.existsSync(e.dir)) return 'missing'
    try {
      fs.accessSync(e.dir, fs.constants.W_OK)
    } catch {
      return 'read-only'
    }
    if (e.internal) return 'assigned'
    let marker
    try { marker = readMarker(e.dir) } catch { return 'missing' }
    // No marker, or another volume's (the directory was lost and made again): not this volume.
    if (!marker || marker.id !== e.id) return 'missing'
    if (marker.assignedTo === this.config.uuid) {
      if (this.readOnly) return 'assigned' // no probe file: nothing is written
      // A mount can be read-only while the directory's mode says writable (root ignores modes).
      try {
        // Where its segments go (<volume>/<uuid>) once that exists: made read-only alone (chattr
        // +i, a read-only bind mount), the volume still probed writable, and every roll placed
        // the next segment there again and failed with EROFS while another volume had room
        // (helper-75's D1).
        const own = path.join(e.dir, this.config.uuid)
        const where = fs.existsSync(own) ? own : e.dir
        fs.accessSync(where, fs.constants.W_OK)
        // Named by pid: two processes probing at once never remove each other's file (an
        // ENOENT would read as a read-only volume).
        const probe = path.join(where, `.logdisk-write-probe.${process.pid}`)
        fs.writeFileSync(probe, '')
        fs.rmSync(probe, { force: true })
      } catch {
        return 'read-only'
      }
      return 'assigned'
    }
    return marker.assignedTo === null ? 'spare' : 'other-store'
  }

  /** What the assigned volumes hold and may hold (PoolPolicyTarget.use: compact.at). */
  use (): { usedBytes: number, capacityBytes: number } {
    return assignedTotals(this.status().volumes)
  }

  /** Assigned, writable volumes with room for one more segment, in pool order. */
  private withRoom (): VolumeStatus[] {
    return this.status().volumes.filter(v => this.takesSegment(v))
  }

  /** An assigned volume with room for one more segment. */
  private takesSegment (v: VolumeStatus): boolean {
    return v.state === 'assigned' && v.capacityBytes - v.usedBytes >= this.config.segmentBytes
  }

  /**
   * `adding`: volumes about to receive one more segment (counted as used). `checkCopies` (what
   * `status` and `pool list` say): each volume's directory is listed, and a copy the index
   * names that is not there counts as lost (an rm -rf of a volume's segments left pool list
   * saying all was well while only verify knew: helper-61); else the index's word is taken.
   */
  status (adding: string[] = [], checkCopies = false): PoolStatus {
    const listed = this.entries().map(e => ({ e, state: this.stateOf(e), declared: this.declaredCapacity(e) }))
    // The volumes holding this store's segments share their filesystems' room (a spare is
    // asked alone: it holds nothing yet).
    const shared = this.sharedRoom(listed.filter(({ state, declared }) => (state === 'assigned' || state === 'read-only') && declared === undefined).map(({ e }) => e))
    const volumes: VolumeStatus[] = listed.map(({ e, state, declared }) => {
      const extra = adding.includes(e.id) ? this.config.segmentBytes : 0
      return { id: e.id, dir: e.dir, internal: e.internal, state, capacityBytes: state === 'missing' ? 0 : this.capacityOf(e, declared, shared), usedBytes: this.usedBytes(e.id) + extra, segments: this.segmentsOn.get(e.id)?.size ?? 0 }
    })
    const { usedBytes: used, capacityBytes: capacity } = assignedTotals(volumes)
    const useFraction = capacity > 0 ? used / capacity : 1
    const warnings = [...this.warnings]
    // Said by every status, not only by the process that saw the crossing (ask mode).
    if (this.policy['pool.mode'] === 'ask' && useFraction >= this.policy['pool.growAt'] && !this.warned.has('grow')) warnings.push(this.growWarning(useFraction))
    const copies = this.copyCounts(volumes, checkCopies)
    if (copies.fewer > 0) warnings.push(`${copies.fewer} segment(s) have fewer than ${this.policy.mirror} copies (written before mirror was raised, a copy that fell behind after a failed write, or one lost): run logdisk pool repair ${this.storeDir}`)
    if (copies.none > 0) warnings.push(`${copies.none} segment(s) have no copy left on any pool volume (removed or lost from under the store): reads of blocks only they hold fail; logdisk verify names them`)
    // With mirror=N a new segment needs room on N volumes: one full volume of two gave every
    // write ENOSPC while the pool's use read 0% and nothing said why (a hostile test, helper-57).
    const mirror = this.policy.mirror
    const roomy = volumes.filter(v => this.takesSegment(v))
    // In auto mode a spare with room is taken when a segment needs it (place): no ENOSPC
    // coming from those (helper-61: warned right after create --pool x3 and mirror=2).
    const spares = this.policy['pool.mode'] === 'auto' ? volumes.filter(v => v.state === 'spare' && v.capacityBytes >= this.config.segmentBytes).length : 0
    if (mirror > 1 && roomy.length + spares < mirror) {
      const full = volumes.filter(v => v.state === 'assigned' && v.capacityBytes > 0 && !roomy.includes(v)).map(v => v.dir)
      warnings.push(`mirror=${mirror} needs room for a new segment on ${mirror} volumes, and only ${roomy.length} ha${roomy.length === 1 ? 's' : 've'} it${full.length > 0 ? ` (full: ${full.join(', ')})` : ''}: writes that need a new segment fail with ENOSPC; add a volume (logdisk pool add ${this.storeDir} DIR) or lower mirror`)
    }
    for (const v of volumes) {
      if (v.state === 'missing') warnings.push(this.missingText({ id: v.id, dir: v.dir }, this.store ? copies.onlyOn.get(v.id) ?? 0 : v.segments, this.store ? copies.heldOn.get(v.id) ?? 0 : v.segments))
      if (v.state === 'read-only' && v.segments > 0) warnings.push(`pool volume ${v.dir} is read-only: no new segments go there`)
    }
    return { volumes, useFraction, warnings }
  }

  /**
   * Of the segments the index places on volumes (archived ones aside: backing storage holds
   * them): how many have fewer copies than mirror asks, how many none, and per volume how many
   * it holds (`heldOn`) and how many of those have no copy on any volume (`onlyOn`). With
   * `listed`, a copy counts if its file is in its volume's directory, for every volume whose
   * directory can be listed, a "missing" one too (its marker gone or garbled, its files there
   * and read; or a filesystem unmounted under it, its files gone: helper-63); else a copy
   * counts if its volume is not missing.
   */
  private copyCounts (volumes: VolumeStatus[], listed: boolean): { fewer: number, none: number, onlyOn: Map<string, number>, heldOn: Map<string, number> } {
    const out = { fewer: 0, none: 0, onlyOn: new Map<string, number>(), heldOn: new Map<string, number>() }
    if (!this.store) return out
    const there = new Map<string, Set<string> | undefined>()
    for (const v of volumes) {
      if (!listed) {
        if (v.state !== 'missing') there.set(v.id, undefined)
        continue
      }
      try { there.set(v.id, new Set(fs.readdirSync(this.dirOf(v.id)))) } catch { /* not there */ }
    }
    const holds = (volume: string, id: number): boolean => {
      if (!there.has(volume)) return false
      const names = there.get(volume)
      return names === undefined || names.has(segmentFileName(id))
    }
    const missing = new Set(volumes.filter(v => v.state === 'missing').map(v => v.id))
    for (const [id, vs] of this.store.segmentPlacement()) {
      if (vs.length === 0) continue
      for (const v of vs) out.heldOn.set(v, (out.heldOn.get(v) ?? 0) + 1)
      const n = vs.filter(v => holds(v, id)).length
      const away = vs.filter(v => missing.has(v)) // said with the missing volume
      if (n === 0 && away.length > 0) for (const v of away) out.onlyOn.set(v, (out.onlyOn.get(v) ?? 0) + 1)
      // A fresh store's current segment exists only in memory until a command writes
      // (helper-69: `status` of every new store warned that a segment had no copy left).
      else if (n === 0 && !this.store.isSegmentArchived(id) && !this.store.isEmptyCurrent(id)) out.none++
      else if (n > 0 && n < this.policy.mirror && this.policy.mirror > 1) out.fewer++
    }
    return out
  }

  private growWarning (useFraction: number): string {
    return `pool use ${Math.round(useFraction * 100)}% crossed pool.growAt=${this.policy['pool.growAt']}; add a volume with: logdisk pool add ${this.storeDir} DIR --capacity SIZE`
  }

  private warnOnce (key: string, text: string): void {
    if (this.warned.has(key)) return
    this.warned.add(key)
    this.warnings.push(text)
    this.log.warn({ pool: this.storeDir }, text)
  }

  /** Takes the first spare of the pool for this store; false when there is none. */
  private assignSpare (why: string): boolean {
    for (const e of this.entries()) {
      if (e.internal || this.stateOf(e) !== 'spare') continue
      if (claim(e.dir, this.config.uuid)) {
        this.claimOwner(e.dir)
        this.markGrown(e.dir, true)
        this.log.info({ volume: e.dir, why }, 'assigned a spare pool volume')
        return true
      }
    }
    return false
  }

  /** Records in pool.json whether the pool assigned this volume by itself (growth). */
  private markGrown (dir: string, grown: boolean): void {
    const v = this.file.volumes.find(v => path.resolve(v.dir) === path.resolve(dir))
    if (!v || !!v.grown === grown) return
    if (grown) v.grown = true
    else delete v.grown
    this.save()
  }

  /** Grow on threshold: after each placement and on every tick. */
  private afterChange (): void {
    const { useFraction } = this.status()
    if (useFraction < this.policy['pool.growAt']) {
      // Back under the threshold (a compaction, a snapshot deleted, a shrink): the crossing's
      // warning goes, and the next crossing warns again (it stayed until a pool add).
      if (this.warned.has('grow') || this.warned.has('nospare')) {
        this.warned.delete('grow')
        this.warned.delete('nospare')
        this.warnings = this.warnings.filter(w => !w.startsWith('pool use '))
      }
      return
    }
    const pct = Math.round(useFraction * 100)
    if (this.policy['pool.mode'] === 'ask') {
      this.warnOnce('grow', this.growWarning(useFraction))
      return
    }
    if (!this.assignSpare(`use ${pct}% >= pool.growAt ${this.policy['pool.growAt']}`)) {
      this.warnOnce('nospare', `pool use ${pct}% crossed pool.growAt and no spare volume is left; add one with: logdisk pool add ${this.storeDir} DIR`)
    }
  }

  /**
   * Periodic work (the daemon calls it): grow on threshold, and shrink on surplus by draining
   * the emptiest volume and releasing it to spare.
   */
  async tick (): Promise<void> {
    if (this.readOnly) return
    this.afterChange()
    const { useFraction, volumes } = this.status()
    if (useFraction >= this.policy['pool.shrinkAt'] || this.draining || !this.store) return
    // Only volumes the pool took by itself are given back by itself; one a user added stays.
    const grown = new Set(this.file.volumes.filter(v => v.grown).map(v => path.resolve(v.dir)))
    const assigned = volumes.filter(v => v.state === 'assigned' && !v.internal && grown.has(path.resolve(v.dir)))
    if (assigned.length === 0 || volumes.filter(v => v.state === 'assigned').length < 2) return
    const emptiest = assigned.sort((a, b) => a.segments - b.segments)[0]
    const others = volumes.filter(v => v.state === 'assigned' && v.id !== emptiest.id)
    // Mirrored: the copies of a segment need as many volumes with room as there are copies.
    if (others.filter(v => v.capacityBytes - v.usedBytes >= this.config.segmentBytes).length < this.policy.mirror) return
    const room = others.reduce((n, v) => n + Math.floor((v.capacityBytes - v.usedBytes) / this.config.segmentBytes), 0)
    const capacity = others.reduce((n, v) => n + v.capacityBytes, 0)
    const usedAfter = others.reduce((n, v) => n + v.usedBytes, 0) + emptiest.usedBytes
    // One more segment after the drain must not cross pool.growAt, or the pool would grow
    // again at once (grow/drain thrash).
    if (room < emptiest.segments + 1 || (usedAfter + this.config.segmentBytes) / capacity >= this.policy['pool.growAt']) return
    this.log.info({ volume: emptiest.dir, useFraction }, `pool use under pool.shrinkAt=${this.policy['pool.shrinkAt']}: draining the emptiest volume`)
    try {
      await this.drain(emptiest.dir)
    } catch (err) {
      // Writes took the room meanwhile: the volume stays, and the next tick judges again.
      if (!isLogdiskError(err, 'NO_SPACE')) throw err
      this.log.info({ volume: emptiest.dir, err: (err as Error).message }, 'shrinking the pool stopped: the store\'s writes need the room')
    }
  }

  // ---- management (pool add / remove / repair)

  /** Adds a directory to the pool: assigned to this store now, or a spare (`spare`). */
  add (dir: string, capacityBytes: number | undefined, spare = false): VolumeStatus {
    dir = path.resolve(dir)
    let markerSetAside: string | undefined
    const known = this.file.volumes.find(v => path.resolve(v.dir) === dir)
    // Another store's volume may be listed (it may become spare later), never written to.
    let existing
    try { existing = known?.internal ? undefined : readMarker(dir) } catch { existing = undefined }
    const othersVolume = !!existing && existing.assignedTo !== null && existing.assignedTo !== this.config.uuid
    if (othersVolume && capacityBytes !== undefined) {
      throw new LogdiskError('BAD_ARGUMENT', `pool volume ${dir} is assigned to another store (${existing!.assignedTo}); its capacity is that store's to set (nothing was changed)`)
    }
    if (known?.internal) {
      if (capacityBytes !== undefined) this.setCapacity(dir, capacityBytes)
    } else if (known) {
      // Also remakes the marker of a lost directory made again, under the id the index knows.
      if (!othersVolume) ensureMarker(dir, capacityBytes ?? undefined, known.id, file => { markerSetAside = file })
    } else {
      const real = realPathOf(dir)
      const storeReal = realPathOf(this.storeDir)
      if (real === storeReal || real.startsWith(storeReal + path.sep)) throw new LogdiskError('BAD_ARGUMENT', `${dir} is inside the store; give a directory outside it`)
      // One directory under two names (a symlink, a bind mount: the same marker) would count
      // as two volumes, and mirror=2 would keep both "copies" in one file (hostile test).
      const same = this.file.volumes.find(v => !v.internal && (realPathOf(path.resolve(v.dir)) === real || (existing !== undefined && v.id === existing.id)))
      if (same) throw new LogdiskError('BAD_ARGUMENT', `${dir} is pool volume ${same.dir} under another name (the same directory, or the same .logdisk-volume.json): it is in the pool already`)
      const marker = othersVolume ? existing! : ensureMarker(dir, capacityBytes ?? undefined)
      this.file.volumes.push({ dir, id: marker.id })
      this.save()
    }
    if (othersVolume) {
      this.log.warn({ dir }, 'pool volume is assigned to another store; kept in the pool, not used')
    } else if (!spare && !known?.internal) {
      if (claim(dir, this.config.uuid)) {
        this.claimOwner(dir)
        // The user's now, even if the pool took it by itself before (create --pool lists
        // spares): a shrink gives back only volumes it took, never one a user added.
        this.markGrown(dir, false)
      } else this.log.warn({ dir }, 'pool volume is assigned to another store; kept in the pool, not used')
    }
    this.warned.delete('grow')
    this.warned.delete('nospare')
    this.warnings = []
    const added = this.status().volumes.find(v => v.dir === dir)!
    return markerSetAside === undefined ? added : { ...added, markerSetAside }
  }

  private setCapacity (dir: string, capacityBytes: number): void {
    const v = this.file.volumes.find(v => path.resolve(v.dir) === dir)!
    if (v.internal) {
      v.capacityBytes = capacityBytes
      this.save()
    } else {
      ensureMarker(dir, capacityBytes)
    }
  }

  /** Moves every segment of this store off `dir` (copy, fsync, switch the index, delete), then releases it. */
  async drain (dir: string, onProgress?: (done: number, total: number) => void, signal?: AbortSignal): Promise<number> {
    if (!this.store) throw new LogdiskError('IO', 'internal: pool not attached to its store')
    dir = path.resolve(dir)
    const entry = this.entries().find(e => path.resolve(e.dir) === dir)
    if (!entry) throw new LogdiskError('NOT_FOUND', `${dir} is not in the pool of ${this.storeDir} (logdisk pool list shows it)`)
    if (entry.internal) throw new LogdiskError('BAD_ARGUMENT', `${dir} is the store's own volume; it cannot be removed`)
    if (this.draining) throw new LogdiskError('BUSY', `the pool of ${this.storeDir} is draining a volume; try again when it is done`)
    this.draining = true
    this.drainingVolume = entry.id
    this.drainYielded = undefined
    let moved = 0
    // Its reservation would take room the segments moved need; none is made ahead while the
    // drain runs (place refuses `ahead`), so the loop below never meets one.
    let total = 0
    try {
      await this.store.discardNextSegment()
      total = this.sortedOn(entry.id).length
      // Until nothing is left: a segment may have been placed there just before the drain
      // began, or during the last sync (writes come first).
      for (;;) {
        const segments = this.sortedOn(entry.id)
        if (segments.length === 0) {
          // Every removal on it durable (the segment made ahead among them) before it is
          // released: one a power loss undid would be a file of this store on a spare.
          await this.store.syncVolume(entry.id, signal)
          if (this.sortedOn(entry.id).length === 0) break
          continue
        }
        for (const id of segments) {
          if (this.drainYielded !== undefined) {
            throw new LogdiskError('NO_SPACE', `cannot drain ${dir}: ${this.drainYielded} (no other volume had room); it stays assigned, ${moved} segment(s) moved; add a volume first`)
          }
          const named = this.store.volumesOf(id)
          if (named !== undefined && !named.includes(entry.id)) {
            // Counted here, not named here by the index: a copy a crash or a failed delete left
            // (an open counts the copies it finds, and one it could not remove, its directory
            // not writable then, stays counted). Nothing to move: the sweep before the release
            // removes its file (syncVolume). Judged as a move, it found every other volume
            // holding a copy and the drain was refused ("add a volume first", mirror=1) after a
            // kill -9 that followed a drain that could not delete its old copies.
            this.vacated(id, [entry.id])
            continue
          }
          const targets = (): VolumeStatus[] => this.withRoom().filter(v => v.id !== entry.id && !(this.store!.volumesOf(id) ?? []).includes(v.id))
          // The move waits for the store's maintenance lock: a mirror repair that runs first
          // may put a copy on the volume chosen here, and the store then refuses the move
          // (BUSY, Placement.relocate). Choose again: that volume now holds a copy, so it is
          // not chosen twice.
          for (;;) {
            // A copy beyond what mirror asks (lowered since) is dropped, not moved (helper-75's D4).
            const elsewhere = new Set((this.store.volumesOf(id) ?? []).filter(v => v !== entry.id)).size
            if (elsewhere >= this.policy.mirror && await this.store.dropSegmentCopy(id, entry.id, this.policy.mirror, {}, signal)) break
            if (targets().length === 0 && !(this.assignSpare(`draining ${dir}`) && targets().length > 0)) {
              // Room elsewhere, but on volumes that hold a copy of it already: say so, not "no room".
              const holders = this.withRoom().filter(v => v.id !== entry.id).length
              throw new LogdiskError('NO_SPACE', holders > 0
                ? `cannot drain ${dir}: every other pool volume with room already holds a copy of segment ${id} (its copies must be on distinct volumes); add a volume first`
                : `cannot drain ${dir}: no other pool volume has room for segment ${id}; add one first`)
            }
            const to = targets()[0].id
            // Reserved now, as place() reserves: the move waits for the maintenance lock and
            // copies a whole segment, and writes placing segments meanwhile must not count
            // the same room (the target overfilled by one segment).
            this.occupied(id, [to])
            try {
              // `signal`: a pool remove interrupted while the move still waits for that lock
              // (behind a compaction) stops at once; a move that has begun completes.
              await this.store.relocateSegment(id, entry.id, to, signal)
              break
            } catch (err) {
              if (!isLogdiskError(err, 'BUSY') || !(this.store.volumesOf(id) ?? []).includes(to)) throw err
            } finally {
              // The reservation stays only for a copy the index records there (the one moved,
              // or a mirror repair's: BUSY). None when the move failed, removed the segment
              // made ahead instead, or only cleaned up after a move that crashed.
              if (!(this.store.volumesOf(id) ?? []).includes(to)) this.vacated(id, [to])
            }
          }
          moved++
          total = Math.max(total, moved + this.sortedOn(entry.id).length)
          onProgress?.(moved, total)
        }
      }
    } finally {
      this.draining = false
      this.drainingVolume = undefined
      this.drainYielded = undefined
    }
    release(dir, this.config.uuid)
    this.markGrown(dir, false)
    this.log.info({ volume: dir, moved }, 'drained and released the pool volume to spare')
    return moved
  }

  /**
   * Takes volume `e`, whose directory is gone, out of the index: a copy there of a segment whose
   * copies elsewhere are as many as mirror asks (lowered since) and pass their checksums is
   * forgotten (the index stops naming it); refuses (NOT_FOUND) while the index names another
   * copy there. Returns how many copies it forgot (counted as moved off). With mirror lowered
   * to 1 after a copy on each of two volumes, one of them gone, the remove was refused for good:
   * it asked for a pool repair, which left the record as it was (helpers 75 and 79).
   */
  private async forgetGone (e: { id: string, dir: string }): Promise<number> {
    const store = this.store
    if (!store) throw new LogdiskError('IO', 'internal: pool not attached to its store')
    const namedThere = (): Array<[number, string[]]> => [...store.segmentPlacement()].filter(([, vs]) => vs.includes(e.id))
    let forgotten = 0
    for (const [id, vs] of namedThere()) {
      if (new Set(vs.filter(v => v !== e.id)).size < this.policy.mirror) continue
      if (await store.dropSegmentCopy(id, e.id, this.policy.mirror, { gone: true })) forgotten++
    }
    const named = namedThere()
    if (named.length > 0) {
      const only = named.filter(([, vs]) => vs.every(v => v === e.id)).length
      throw new LogdiskError('NOT_FOUND', only > 0
        ? `cannot remove pool volume ${e.dir}: its directory is gone and ${only} segment(s) the index names there have no copy elsewhere; bring the directory back (with its files), then run pool remove again`
        : `cannot remove pool volume ${e.dir}: its directory is gone and the index still names ${named.length} segment copy(ies) there whose copies elsewhere are fewer than mirror=${this.policy.mirror} asks or fail their checksums; run logdisk pool repair ${this.storeDir} first (it copies them from their other copies), or bring the directory back`)
    }
    if (forgotten > 0) this.log.warn({ volume: e.dir, forgotten }, 'removed a pool volume whose directory is gone: the index no longer names its copies beyond what mirror asks (their other copies pass their checksums)')
    else this.log.warn({ volume: e.dir }, 'removed a pool volume whose directory is gone (it held no segment of the store)')
    return forgotten
  }

  private sortedOn (volume: string): number[] {
    return [...(this.segmentsOn.get(volume) ?? [])].sort((a, b) => a - b)
  }

  /** Drains `dir` and takes it out of this store's pool. */
  async remove (dir: string, onProgress?: (done: number, total: number) => void, signal?: AbortSignal): Promise<number> {
    const gone = this.entries().find(e => !e.internal && path.resolve(e.dir) === path.resolve(dir) && missingReason(e.dir, e.id)?.kind === 'directory-gone')
    // Its directory gone, nothing can be moved off it, and its marker cannot be released (the
    // lock file failed, ENOENT, and the volume stayed "missing" for good: helper-75's D3).
    const moved = gone !== undefined ? await this.forgetGone(gone) : await this.drain(dir, onProgress, signal)
    this.file.volumes = this.file.volumes.filter(v => path.resolve(v.dir) !== path.resolve(dir))
    this.save()
    return moved
  }
}

/** Bytes used and capacity over the assigned volumes (what a pool's use is a fraction of). */
function assignedTotals (volumes: VolumeStatus[]): { usedBytes: number, capacityBytes: number } {
  const assigned = volumes.filter(v => v.state === 'assigned')
  return { usedBytes: assigned.reduce((n, v) => n + v.usedBytes, 0), capacityBytes: assigned.reduce((n, v) => n + v.capacityBytes, 0) }
}

/** The segments of a volume that may still be filling: the log's current one and the one made ahead. */
const GROWING_SEGMENTS = 2

/** Bytes this process may still write on `dir`'s filesystem (0 when it cannot be asked). */
function filesystemRoom (dir: string): number {
  try {
    const st = fs.statfsSync(dir)
    return st.bavail * st.bsize
  } catch {
    return 0
  }
}

/** `dir` with every symlink resolved, or as given when it does not exist (yet). */
function realPathOf (dir: string): string {
  try {
    return fs.realpathSync(dir)
  } catch {
    return dir
  }
}
