import { LogdiskError } from '../errors'
import { EntryKind } from './format'
import type { SnapshotRecord } from './index-db'

/** How a new snapshot gets its volume id (001 partition log routine: constant, sequential, explicit). */
export interface VolumeIdPolicy {
  mode: 'sequential' | 'explicit' | 'constant'
  /** The id every snapshot gets under `constant`. */
  constant: number
  /** Whether ids of deleted snapshots go back to a free pool (sequential takes the lowest free). */
  reuse: boolean
}

export const DEFAULT_VOLUME_ID_POLICY: VolumeIdPolicy = { mode: 'sequential', constant: 1, reuse: true }

/** Payload of a snapshot marker in the log; enough to rebuild the table by replay. */
export interface SnapshotMarker {
  name: string
  id: number | null
  frozen: boolean
  /** Cut seq of the snapshot that lost its id to this one (constant policy). */
  displaced?: number
  /**
   * When the snapshot was taken where it was made (a received snapshot: the time in the send
   * stream). Its record's timeMs is this, not the marker's own time, which stays in log order.
   */
  createdMs?: number
  /**
   * The volume's size at the cut (the snapshot image's size). Markers of releases before it
   * lack it: their snapshots take the volume's current size, as they always did.
   */
  sizeBytes?: number
}

/**
 * A resize, as the log records it: a sync marker (kind 2, so that releases before it read it
 * as an ordinary sync point) whose payload has `resize: { fromBytes, toBytes }`, appended
 * under the append lock just before the size changes. Points before its seq had `fromBytes`.
 */
export interface ResizeRecord {
  seq: number
  fromBytes: number
  toBytes: number
}

/** The `resize` part of a sync marker's payload, if it is a valid one. */
export function resizeOf (kind: number, payload: Record<string, unknown> | undefined): { fromBytes: number, toBytes: number } | undefined {
  if (kind !== EntryKind.sync || payload === undefined) return undefined
  const r = payload.resize as { fromBytes?: unknown, toBytes?: unknown } | undefined
  if (typeof r !== 'object' || r === null) return undefined
  const ok = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n > 0
  return ok(r.fromBytes) && ok(r.toBytes) ? { fromBytes: r.fromBytes, toBytes: r.toBytes } : undefined
}

export interface DeleteMarker {
  name: string
  seq: number
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/

/**
 * The snapshot volumes of a store, in memory (a store has thousands at most), kept in the
 * index and rebuilt from the log's snapshot markers. The same `apply` serves live snapshots
 * and replay, so both paths agree by construction.
 */
export class SnapshotTable {
  private readonly byName = new Map<string, SnapshotRecord>()
  private sorted: SnapshotRecord[] | undefined

  /** Resizes the log records, oldest first (resize markers compaction freed are gone after a rebuild: only points at or before the history horizon had them). */
  private readonly resizes: ResizeRecord[] = []

  constructor (
    records: SnapshotRecord[],
    public highestId: number,
    /**
     * The cut of the newest snapshot marker with the highest volume id (0: not known, an index
     * written before it was kept). Compaction keeps that marker, so a rebuild from the log still
     * knows the highest id given out (sequential ids without reuse never give one twice).
     */
    public highestIdSeq = 0,
    resizes: ResizeRecord[] = []
  ) {
    for (const r of records) this.byName.set(r.name, r)
    for (const r of resizes) this.addResize(r)
  }

  /**
   * Records the resize marker at `seq` (live appends and replay alike); returns the row for
   * the index, or undefined when the marker is not a resize (or is known already).
   */
  applyResize (kind: number, seq: number, payload: Record<string, unknown> | undefined): ResizeRecord | undefined {
    const r = resizeOf(kind, payload)
    if (r === undefined) return undefined
    const record = { seq, ...r }
    return this.addResize(record) ? record : undefined
  }

  private addResize (r: ResizeRecord): boolean {
    let i = this.resizes.length
    while (i > 0 && this.resizes[i - 1].seq >= r.seq) {
      if (this.resizes[i - 1].seq === r.seq) return false
      i--
    }
    this.resizes.splice(i, 0, r)
    return true
  }

  /**
   * The volume's size at sequence `seq`, `currentBytes` being its size now: the size before
   * the first resize logged after `seq`; the current size when none was.
   */
  sizeAt (seq: number, currentBytes: number): number {
    for (const r of this.resizes) if (r.seq > seq) return r.fromBytes
    return currentBytes
  }

  /** Snapshots in log order (oldest cut first). */
  list (): SnapshotRecord[] {
    this.sorted ??= [...this.byName.values()].sort((a, b) => a.seq - b.seq)
    return this.sorted
  }

  get (name: string): SnapshotRecord | undefined {
    return this.byName.get(name)
  }

  require (name: string): SnapshotRecord {
    const s = this.byName.get(name)
    if (!s) throw new LogdiskError('NOT_FOUND', `no snapshot named "${name}" (logdisk snapshots <store> lists them)`)
    return s
  }

  /** The newest snapshot cut before `seq` (the start of `seq`'s partition), if any. */
  previous (seq: number): SnapshotRecord | undefined {
    let prev: SnapshotRecord | undefined
    for (const s of this.list()) {
      if (s.seq >= seq) break
      prev = s
    }
    return prev
  }

  checkNewName (name: string): void {
    if (!NAME.test(name) || name === 'current' || name.endsWith('.img')) {
      throw new LogdiskError('BAD_ARGUMENT', `snapshot name "${name}" must be 1-128 letters, digits, dot, dash or underscore, not "current" and without .img`)
    }
    if (this.byName.has(name)) throw new LogdiskError('BAD_ARGUMENT', `a snapshot named "${name}" already exists`)
  }

  /** Chooses the new snapshot's volume id; throws when the policy cannot be met. */
  assignId (policy: VolumeIdPolicy, explicit?: number): { id: number, displaced?: SnapshotRecord } {
    const inUse = new Map<number, SnapshotRecord>()
    for (const s of this.byName.values()) if (s.id !== null) inUse.set(s.id, s)
    if (explicit !== undefined) {
      if (!Number.isSafeInteger(explicit) || explicit < 1) throw new LogdiskError('BAD_ARGUMENT', `volume id ${explicit} must be a positive integer`)
      const holder = inUse.get(explicit)
      if (holder) throw new LogdiskError('BAD_ARGUMENT', `volume id ${explicit} is in use by snapshot "${holder.name}"`)
      return { id: explicit }
    }
    switch (policy.mode) {
      case 'explicit':
        throw new LogdiskError('BAD_ARGUMENT', 'the volume id policy is explicit: give --id N')
      case 'constant':
        return { id: policy.constant, displaced: inUse.get(policy.constant) }
      case 'sequential': {
        if (!policy.reuse) return { id: this.highestId + 1 }
        let id = 1
        while (inUse.has(id)) id++
        return { id }
      }
    }
  }

  /**
   * Applies a snapshot or delete marker at `seq`; returns the records to write to the index
   * (null = delete that cut's record).
   */
  apply (kind: number, seq: number, position: number, timeMs: number, payload: Record<string, unknown>): Map<number, SnapshotRecord | null> {
    const changes = new Map<number, SnapshotRecord | null>()
    this.sorted = undefined
    if (kind === EntryKind.snapshot) {
      const m = payload as unknown as SnapshotMarker
      if (m.displaced !== undefined) {
        const old = this.list().find(s => s.seq === m.displaced)
        if (old) {
          const updated = { ...old, id: null }
          this.byName.set(old.name, updated)
          changes.set(old.seq, updated)
        }
      }
      const record: SnapshotRecord = { id: m.id, name: m.name, seq, position, timeMs: m.createdMs ?? timeMs, frozen: m.frozen }
      if (Number.isSafeInteger(m.sizeBytes) && m.sizeBytes! > 0) record.sizeBytes = m.sizeBytes
      this.byName.set(m.name, record)
      changes.set(seq, record)
      if (m.id !== null && m.id >= this.highestId) {
        this.highestId = m.id
        this.highestIdSeq = seq
      }
    } else if (kind === EntryKind.deleteSnapshot) {
      const m = payload as unknown as DeleteMarker
      const old = this.byName.get(m.name)
      if (old && old.seq === m.seq) {
        this.byName.delete(m.name)
        changes.set(old.seq, null)
      }
    }
    this.sorted = undefined
    return changes
  }
}
