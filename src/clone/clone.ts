import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError } from '../errors'
import { isAlive } from '../process-alive'
import { Store } from '../store'
import { readConfig, writeFileAtomic } from '../store/config'
import { recordIdentity } from '../store/identity'
import { withLockFileSync } from '../store/lock-file'

/**
 * Writable clones (issue 14 item 4; seed 000 cl. 1, the baseline partition): a clone is a new
 * store, with its own uuid and log, whose blocks it has no version of read from a snapshot of
 * another store, its parent. Made in O(1): nothing is copied (clone.json names the parent);
 * writes go to the clone's log; reads of blocks the clone never wrote fall through to the
 * parent's snapshot (OpenOptions.fallThrough), for the clone's current image and for its own
 * snapshots. The parent keeps `clones.json`, so it refuses to delete a snapshot a clone reads.
 * `promote` copies in what the clone still reads from its parent, so it stands alone.
 */
export const CLONE_FILE = 'clone.json'
export const CLONES_FILE = 'clones.json'

export interface CloneRecord {
  format: 1
  /** The parent store's directory (absolute). */
  parent: string
  parentUuid: string
  /** The parent's snapshot the clone reads through to, and its cut. */
  snapshot: string
  seq: number
  createdAt: string
}

export const CLONES_LOCK_FILE = 'clones.json.lock'

/** How long a writer of a parent's clones.json waits for another (a slow disk holds it for a rename and two fsyncs). */
export const clonesLock = { waitMs: 60_000 }

interface ClonesFile { format: 1, clones: Array<{ dir: string, uuid: string, snapshot: string, createdAt: string }> }

export function readCloneRecord (dir: string): CloneRecord | undefined {
  const file = path.join(dir, CLONE_FILE)
  if (!fs.existsSync(file)) return undefined
  try {
    const r = JSON.parse(fs.readFileSync(file, 'utf8')) as CloneRecord
    if (r.format !== 1 || typeof r.parent !== 'string' || typeof r.snapshot !== 'string') throw new Error('fields')
    return r
  } catch (err) {
    throw new LogdiskError('BAD_CONFIG', `${file} is not a clone record logdisk can read; the clone cannot be read without it`, err)
  }
}

function readClones (parent: string): ClonesFile {
  try {
    const f = JSON.parse(fs.readFileSync(path.join(parent, CLONES_FILE), 'utf8')) as ClonesFile
    return f.format === 1 && Array.isArray(f.clones) ? f : { format: 1, clones: [] }
  } catch {
    return { format: 1, clones: [] }
  }
}

/** The clones (that still exist and still read from it) of `parent`'s snapshot `snapshot` (all snapshots when undefined). */
export function clonesOf (parent: string, snapshot?: string): string[] {
  const uuid = readConfig(parent).uuid
  return readClones(parent).clones
    .filter(c => snapshot === undefined || c.snapshot === snapshot)
    .filter(c => isThere(c, uuid))
    .map(c => c.dir)
}

/** Whether the clone an entry records is at its directory: its store and clone record, reading `parentUuid`'s snapshot. */
function isThere (c: { dir: string, uuid: string, snapshot: string }, parentUuid: string): boolean {
  try {
    const r = readCloneRecord(c.dir)
    return r !== undefined && r.parentUuid === parentUuid && r.snapshot === c.snapshot && readConfig(c.dir).uuid === c.uuid
  } catch { return false }
}

/**
 * The clones `parent`'s clones.json records for `snapshot` that are not where it recorded
 * them (the directory gone, or holding something else: another store, a clone made there
 * since, an empty mount point): removed, or moved with mv and not opened for writing since
 * (then it still reads the snapshot, and it registers where it is on that open). The two look
 * alike from here, so a delete of the snapshot is refused until the user says which
 * (delete-guard.ts; helper-63: a path that existed again let the delete through).
 */
export function goneClonesOf (parent: string, snapshot: string): Array<{ dir: string, uuid: string }> {
  const uuid = readConfig(parent).uuid
  return readClones(parent).clones.filter(c => c.snapshot === snapshot && !isThere(c, uuid)).map(c => ({ dir: c.dir, uuid: c.uuid }))
}

/**
 * Runs `fn` (a read-modify-write of `parent`'s clones.json) holding the parent's
 * clones.json.lock (lock-file.ts: O_EXCL, naming its holder). Two `clone`s of one
 * parent each read the file, added their entry and renamed theirs over the other's, and one
 * clone dropped out of it: the parent then let the snapshot it reads be deleted (helper-84). A
 * lock left by a process gone from this host is taken over at once (by one of two takers that
 * both saw it, and never one taken since); one held longer than clonesLock.waitMs is refused
 * in one line.
 */
function withClonesLock<T> (parent: string, fn: () => T): T {
  const lock = path.join(parent, CLONES_LOCK_FILE)
  return withLockFileSync(lock, fn, {
    waitMs: clonesLock.waitMs,
    pollMs: 10, // clones.json changes are rare and short
    busyMessage: who => `${parent}'s ${CLONES_FILE} is being changed by ${who} (its lock ${lock} is held); try again (a lock whose process is gone from this host is taken over at once)`,
    failMessage: err => `${parent}: cannot take the lock of its ${CLONES_FILE} (${lock}): ${err.message}`
  })
}

/** A read-modify-write of `parent`'s clones.json under its lock: `change` returns false when nothing changed. */
function changeClones (parent: string, change: (f: ClonesFile) => boolean): boolean {
  return withClonesLock(parent, () => {
    const f = readClones(parent)
    if (!change(f)) return false
    writeFileAtomic(path.join(parent, CLONES_FILE), JSON.stringify(f, null, 2) + '\n')
    return true
  })
}

/** Drops from `parent`'s clones.json the entries of the clones `uuids` (the user says they were removed). */
export function forgetClones (parent: string, uuids: string[]): void {
  changeClones(parent, f => {
    const before = f.clones.length
    f.clones = f.clones.filter(c => !uuids.includes(c.uuid))
    return f.clones.length !== before
  })
}

/**
 * Makes `dir` a clone of `parent`'s snapshot (name and cut as the parent reports them): a new
 * store of the same geometry and a clone.json; then the parent's clones.json names it.
 */
export async function makeClone (parent: string, snap: { name: string, seq: number, sizeBytes?: number }, dir: string): Promise<CloneRecord> {
  parent = path.resolve(parent)
  dir = path.resolve(dir)
  const pc = readConfig(parent)
  if (fs.existsSync(dir) && fs.readdirSync(dir).length > 0) throw new LogdiskError('BAD_ARGUMENT', `${dir} is not empty; give a new or empty directory for the clone`)
  removeInterruptedClones(dir, parent)
  const uuid = crypto.randomUUID()
  const record: CloneRecord = { format: 1, parent, parentUuid: pc.uuid, snapshot: snap.name, seq: snap.seq, createdAt: new Date().toISOString() }
  // Registered in the parent before the clone exists: a `clone` killed after this line leaves
  // an entry whose clone is not there, and a delete of the snapshot asks about it (goneClonesOf)
  // instead of going through. Registered after, a kill in between left a clone its parent did
  // not know of until it was first opened for writing, and the snapshot it reads could be
  // deleted meanwhile (a known defect). A failure that is not a kill takes the entry back.
  registerClone(parent, dir, uuid, snap.name, record.createdAt)
  // Made whole in a directory beside the target, then renamed into place: a `clone` killed
  // before it wrote clone.json left a plain empty store there, which mounted as an all-zero
  // disk (helper-84). Killed before the rename, it leaves only that directory, which the next
  // `clone` to the same target removes (and an open of the target names).
  const building = path.join(path.dirname(dir), `${BUILDING_PREFIX(dir)}${process.pid}-${uuid}`)
  try {
    fs.mkdirSync(path.dirname(dir), { recursive: true })
    // The snapshot's size (the volume's at its cut; the parent's now for a snapshot of a release before it).
    let config = await Store.create(building, { sizeBytes: snap.sizeBytes ?? pc.sizeBytes, blockBytes: pc.blockBytes, segmentBytes: pc.segmentBytes, uuid })
    writeFileAtomic(path.join(building, CLONE_FILE), JSON.stringify(record, null, 2) + '\n')
    let inPlace = false
    try {
      fs.renameSync(building, dir) // a missing target, or an empty directory (replaced)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code !== 'EXDEV' && code !== 'EBUSY') throw err
      inPlace = true // a mount point: made in place, clone.json last (a kill in between leaves a plain store)
    }
    if (inPlace) {
      fs.rmSync(building, { recursive: true, force: true })
      config = await Store.create(dir, { sizeBytes: snap.sizeBytes ?? pc.sizeBytes, blockBytes: pc.blockBytes, segmentBytes: pc.segmentBytes, uuid })
      writeFileAtomic(path.join(dir, CLONE_FILE), JSON.stringify(record, null, 2) + '\n')
    } else {
      syncDir(path.dirname(dir))
    }
    recordIdentity(dir, config)
  } catch (err) {
    fs.rmSync(building, { recursive: true, force: true })
    try { forgetClones(parent, [uuid]) } catch { /* the entry stays: the guard asks about it */ }
    throw err
  }
  return record
}

/** The name a clone being made into `dir` has beside it until it is complete: `.<name>.cloning-<pid>-<uuid>`. */
const BUILDING_PREFIX = (dir: string): string => `.${path.basename(dir)}.cloning-`

function syncDir (dir: string): void {
  const fd = fs.openSync(dir, 'r')
  try { fs.fsyncSync(fd) } finally { fs.closeSync(fd) }
}

/** What `clone`s into `dir` killed before they were done left beside it (their process is gone). */
export function interruptedClones (dir: string): Array<{ path: string, uuid: string }> {
  dir = path.resolve(dir)
  const prefix = BUILDING_PREFIX(dir)
  let names: string[]
  try { names = fs.readdirSync(path.dirname(dir)) } catch { return [] }
  const out: Array<{ path: string, uuid: string }> = []
  for (const n of names) {
    if (!n.startsWith(prefix)) continue
    const m = /^(\d+)-(.+)$/.exec(n.slice(prefix.length))
    if (!m || isAlive(Number(m[1]))) continue
    out.push({ path: path.join(path.dirname(dir), n), uuid: m[2] })
  }
  return out
}

/** Removes what killed `clone`s into `dir` left, and their entries in `parent`'s clones.json (those clones never existed). */
function removeInterruptedClones (dir: string, parent: string): void {
  for (const left of interruptedClones(dir)) {
    let from = parent
    try { from = readCloneRecord(left.path)?.parent ?? parent } catch { /* unreadable: the parent cloned from now */ }
    fs.rmSync(left.path, { recursive: true, force: true })
    try { forgetClones(from, [left.uuid]) } catch { /* the entry stays: the guard asks about it */ }
  }
}

/** An open of `dir` that holds no store while a `clone` into it was interrupted: one line saying so. */
export function refuseInterruptedClone (dir: string): void {
  const left = interruptedClones(dir)
  if (left.length === 0 || fs.existsSync(path.join(dir, 'store.json'))) return
  throw new LogdiskError('STORE_NOT_FOUND', `no store at ${dir}: a logdisk clone into it was interrupted before it was finished (it left ${left[0].path}, which nothing reads); run the clone again (it removes what was left) or remove that directory`)
}

/**
 * Makes `parent`'s clones.json name the clone at `dir` (by its uuid) as reading snapshot
 * `snapshot`, so that `delete` protects it; an entry of the same uuid is replaced (the clone
 * moved). An entry of another uuid at the same directory stays: that clone was moved away
 * (or removed) and a new one made there, and dropping it let a delete cut the moved one off
 * (helper-63); the guard asks about it until it is opened where it is, or forgotten. Returns whether the file changed. Called by
 * clone, by every open of a clone for writing, and by adopt of a clone: a clone killed
 * between its making and this, moved with mv, or copied and adopted was not known to its
 * parent, and a delete of its snapshot was allowed (a hostile test, helper-53).
 */
export function registerClone (parent: string, dir: string, uuid: string, snapshot: string, createdAt = new Date().toISOString()): boolean {
  dir = path.resolve(dir)
  // Read first without the lock: every open of a clone for writing comes here, and the entry is
  // almost always there already (nothing to write, no lock to take in a parent that may be read-only).
  if (readClones(parent).clones.some(c => c.dir === dir && c.uuid === uuid && c.snapshot === snapshot)) return false
  return changeClones(parent, f => {
    if (f.clones.some(c => c.dir === dir && c.uuid === uuid && c.snapshot === snapshot)) return false
    f.clones = f.clones.filter(c => c.uuid !== uuid)
    f.clones.push({ dir, uuid, snapshot, createdAt })
    return true
  })
}

/**
 * The clones that read through to the store at `dir` by its identity (their clone.json names
 * this directory and uuid): what a new identity would cut off. A copy of a parent (cp -a)
 * lists its original's clones in clones.json; they name the original, not the copy.
 */
export function clonesReadingFrom (dir: string): string[] {
  dir = path.resolve(dir)
  return clonesOf(dir).filter(c => namesParent(c, dir))
}

/** Drops from `dir`'s clones.json the clones that read from another directory (a copy's, listing its original's). */
export function forgetOthersClones (dir: string): void {
  dir = path.resolve(dir)
  if (!fs.existsSync(path.join(dir, CLONES_FILE))) return
  changeClones(dir, f => {
    const mine = f.clones.filter(c => namesParent(c.dir, dir))
    if (mine.length === f.clones.length) return false
    f.clones = mine
    return true
  })
}

/** Whether the clone at `clone` reads from the store at directory `parent` (its clone.json says so). */
function namesParent (clone: string, parent: string): boolean {
  try { return readCloneRecord(clone)?.parent === parent } catch { return false }
}

/**
 * Checks that `parent` (opened for reading) is the store and snapshot the clone was made
 * from: the fall-through of the clone's reads.
 */
export function checkParent (dir: string, r: CloneRecord, parent: Store): (offset: number, length: number) => Promise<Buffer> {
  if (parent.config.uuid !== r.parentUuid) {
    throw new LogdiskError('IDENTITY', `${dir} is a clone of the store ${r.parentUuid}, but ${r.parent} is another store (${parent.config.uuid}); put the parent back at ${r.parent}`)
  }
  const snap = parent.snapshots().find(s => s.name === r.snapshot)
  if (!snap || snap.seq !== r.seq) {
    throw new LogdiskError('NOT_FOUND', `${dir} is a clone of snapshot ${r.snapshot} of ${r.parent}, which no longer has it; the clone cannot be read`)
  }
  return async (offset, length) => {
    const data = await parent.readSnapshot(r.snapshot, offset, length)
    return data.length === length ? data : Buffer.concat([data, Buffer.alloc(length - data.length)])
  }
}

/**
 * The blocks of [first, end) that `parent`'s snapshot (the clone's record) holds data in, in
 * increasing order, a chunk at a time: OpenOptions.fallThroughHolds. From the parent's map, no
 * data read, in work proportional to the blocks the parent ever wrote.
 */
export function parentHolds (r: CloneRecord, parent: Store): (first: number, end: number) => AsyncGenerator<Float64Array> {
  return async function * (first, end) {
    end = Math.min(end, parent.sizeBytes / parent.blockBytes)
    if (end <= first) return
    for await (const { blocks, at } of parent.versionsAt([r.seq], 8192)) {
      const held: number[] = []
      for (let i = 0; i < blocks.length; i++) if (blocks[i] >= first && blocks[i] < end && at[0].where[i] >= 0) held.push(blocks[i])
      if (held.length > 0) yield Float64Array.from(held)
      if (blocks.length > 0 && blocks[blocks.length - 1] >= end - 1) return
    }
  }
}

/**
 * Copies into the clone every block of the parent's snapshot that the clone has no version
 * of, so that it reads the same without its parent; then it is a store of its own (clone.json
 * goes, the parent forgets it). Refused while the clone has snapshots: their images read
 * through to the parent too, and the copies (new writes) come after them. For the same reason
 * every earlier point (a sync, a time, a sequence number) is given up before clone.json goes:
 * restored from the clone's log alone it would read zeros where the parent's blocks were
 * (found by a hostile test, 2026-12-06).
 */
export async function promote (clone: Store, r: CloneRecord, parent: Store, onProgress?: (done: number, total: number) => void): Promise<{ blocks: number, givenUp: number }> {
  if (clone.snapshots().length > 0) {
    throw new LogdiskError('BUSY', `${clone.dir} has snapshots (${clone.snapshots().map(s => s.name).join(', ')}), whose images read through to ${r.parent} too: delete them (or export them) before promoting it`)
  }
  const B = clone.blockBytes
  let blocks = 0
  const total = Math.ceil(clone.sizeBytes / B)
  let run: { first: number, data: Buffer[] } | undefined
  const flushRun = async (): Promise<void> => {
    if (!run) return
    await clone.write(run.first * B, Buffer.concat(run.data))
    run = undefined
  }
  // The parent's snapshot image, block by block (holes skipped: they read as zeros anyway).
  for await (const { block, data } of snapshotBlocks(parent, r)) {
    if (clone.hasVersion(block)) continue
    if (run && run.first + run.data.length === block && run.data.length < 256) run.data.push(data)
    else {
      await flushRun()
      run = { first: block, data: [data] }
    }
    blocks++
    if (blocks % 1024 === 0) onProgress?.(block, total)
  }
  await flushRun()
  const givenUp = await clone.giveUpPointsSoFar()
  await clone.flush() // the copies and the marker after them are durable before the clone stops reading through its parent
  fs.rmSync(path.join(clone.dir, CLONE_FILE))
  forgetClones(r.parent, [clone.config.uuid]) // by uuid: another clone's entry at this path stays
  onProgress?.(total, total)
  return { blocks, givenUp }
}

/**
 * The blocks of `parent`'s snapshot that do not read as zeros, in block order. A parent that is
 * a clone itself (a clone of a clone) reads the blocks it never wrote from its own parent, which
 * its log does not hold: its snapshot is read whole, through that chain, and zero blocks are
 * left out (helper-84: promote of a clone of a clone copied only its parent's own blocks).
 */
async function * snapshotBlocks (parent: Store, r: CloneRecord): AsyncGenerator<{ block: number, data: Buffer }> {
  if (!parentOf(parent)) {
    yield * parent.imageAt(r.seq)
    return
  }
  const B = parent.blockBytes
  const total = Math.ceil(parent.sizeBytes / B)
  const zero = Buffer.alloc(B)
  for (let first = 0; first < total; first += 256) {
    const n = Math.min(256, total - first)
    const chunk = await parent.readSnapshot(r.snapshot, first * B, n * B)
    for (let i = 0; i < n && (i + 1) * B <= chunk.length; i++) {
      const data = chunk.subarray(i * B, (i + 1) * B)
      if (!data.equals(zero)) yield { block: first + i, data: Buffer.from(data) }
    }
  }
}

/** The parent a clone was opened with (openStore records it), for promote. */
const parents = new WeakMap<Store, { record: CloneRecord, parent: Store }>()
export function recordParent (clone: Store, record: CloneRecord, parent: Store): void { parents.set(clone, { record, parent }) }
export function parentOf (clone: Store): { record: CloneRecord, parent: Store } | undefined { return parents.get(clone) }

/** Refuses operations that would see only a clone's own blocks (they enumerate its log). */
export function refuseOnClone (dir: string, what: string): void {
  const r = readCloneRecord(dir)
  if (r) throw new LogdiskError('BAD_ARGUMENT', `${dir} is a clone of snapshot ${r.snapshot} of ${r.parent}: ${what} does not follow a clone's reads to its parent yet; promote it first (logdisk promote ${dir})`)
}
