import crypto from 'node:crypto'
import os from 'node:os'
import path from 'node:path'
import { LogdiskError, isLogdiskError } from '../errors'
import type { ArchiveTarget } from '../archive/target'

/**
 * What a replica's writer must respect before it deletes a snapshot (issue 14 item 4, "the
 * parent refuses to delete a snapshot that clones depend on"), for clones made from the
 * replica on any host (clone-replica.ts). The writer may be offline when the clone is made, so
 * the clone records its dependency on the replica itself, beside the lease and the manifests:
 *
 *   clone-dep.<32 hex>   JSON CloneDependency: one clone of one snapshot (by its cut, seq)
 *   deleting.s<12 digits> JSON: the writer is deleting (or has deleted) the snapshot of that cut
 *
 * Both sides write first and read the other's object after (Dekker's handshake, on a target
 * that reads its own writes: a directory, S3 since 2020, Ceph RGW): the clone puts its
 * dependency, then looks for `deleting.`; the writer puts `deleting.`, then lists the
 * dependencies. Of a clone and a deletion racing, at least one sees the other and stops.
 * `deleting.` objects stay after the deletion (a few bytes each), so no later clone of that
 * cut is made from an older manifest. Recovery and replication ignore both kinds.
 */
export const DEPENDENCY_PREFIX = 'clone-dep.'
export const DELETING_PREFIX = 'deleting.'

export interface CloneDependency {
  format: 1
  /** The object holding this record. */
  name: string
  /** The snapshot the clone reads through to: its name and cut on the replica's store. */
  snapshot: string
  seq: number
  /**
   * The manifest its hidden parent was recovered from: the segment objects it names are read
   * for as long as the clone lives, so the writer's sweep of older generations keeps them
   * (old-generations.ts). Absent in records of older releases (then every one is kept).
   */
  manifest?: string
  /** Where the clone is: its host and directory, and the process that made it. */
  host: string
  dir: string
  pid: number
  createdAt: string
}

export function deletingObject (seq: number): string {
  return `${DELETING_PREFIX}s${String(seq).padStart(12, '0')}`
}

/** Puts a clone's dependency on snapshot `snap` of the replica, whose hidden parent was recovered from `manifest`; returns the record. */
export async function recordDependency (target: ArchiveTarget, snap: { name: string, seq: number }, dir: string, manifest: string): Promise<CloneDependency> {
  return await putRecord(target, { format: 1, name: recordName(DEPENDENCY_PREFIX), snapshot: snap.name, seq: snap.seq, manifest, ...recordOrigin(dir) })
}

/** A new record object's name: `prefix` and 32 random hex digits. */
export function recordName (prefix: string): string {
  return prefix + crypto.randomBytes(16).toString('hex')
}

/** Who puts a record on the replica (this host and process), and for which directory. */
export function recordOrigin (dir: string): { host: string, dir: string, pid: number, createdAt: string } {
  return { host: os.hostname(), dir: path.resolve(dir), pid: process.pid, createdAt: new Date().toISOString() }
}

/** Puts a JSON record under its own name; returns it. */
export async function putRecord<T extends { name: string }> (target: ArchiveTarget, record: T): Promise<T> {
  await target.put(record.name, Buffer.from(JSON.stringify(record, null, 2) + '\n'))
  return record
}

/** Removes a clone's dependency (promote, a clone that failed halfway). */
export async function releaseDependency (target: ArchiveTarget, name: string): Promise<void> {
  if (!name.startsWith(DEPENDENCY_PREFIX)) throw new LogdiskError('BAD_ARGUMENT', `${name} is not a clone dependency object (${DEPENDENCY_PREFIX}...)`)
  await target.delete(name)
}

/** Whether the writer has begun deleting the snapshot of cut `seq` (a clone of it then stops). */
export async function isBeingDeleted (target: ArchiveTarget, seq: number): Promise<boolean> {
  return await target.has(deletingObject(seq))
}

/**
 * The clones that depend on the snapshot of cut `seq`, from their records on the replica. A
 * record of this host whose clone is gone (its directory no longer holds a clone made under
 * that record, and the process that made it is dead: a clone that crashed halfway, or was
 * removed) is not a dependency. Records of other hosts are trusted: this host cannot look.
 */
export async function dependenciesOn (target: ArchiveTarget, seq: number, isLive: (dep: CloneDependency) => boolean): Promise<CloneDependency[]> {
  const out: CloneDependency[] = []
  for (const name of await target.list(DEPENDENCY_PREFIX)) {
    let raw: Buffer
    try {
      raw = await target.get(name)
    } catch (err) {
      if (isLogdiskError(err, 'NOT_FOUND')) continue // released meanwhile
      throw err
    }
    let dep: CloneDependency
    try {
      dep = JSON.parse(raw.toString('utf8')) as CloneDependency
    } catch {
      // Unreadable: it may still be a clone's, so it counts: nothing is deleted under it.
      out.push({ format: 1, name, snapshot: '?', seq, host: '?', dir: '?', pid: 0, createdAt: '?' })
      continue
    }
    if (dep.seq !== seq) continue
    if (dep.host === os.hostname() && !isLive(dep)) continue
    out.push({ ...dep, name })
  }
  return out
}

/** Puts the writer's `deleting.` mark for the snapshot `snap`. */
export async function markDeleting (target: ArchiveTarget, snap: { name: string, seq: number }): Promise<string> {
  const name = deletingObject(snap.seq)
  await target.put(name, Buffer.from(JSON.stringify({ format: 1, snapshot: snap.name, seq: snap.seq, host: os.hostname(), pid: process.pid, at: new Date().toISOString() }) + '\n'))
  return name
}

/** How a dependency names its clone in messages. */
export function describeDependency (dep: CloneDependency): string {
  return `${dep.host}:${dep.dir} (${dep.name})`
}

