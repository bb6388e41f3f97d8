import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError } from '../errors'
import type { ArchiveTarget } from '../archive/target'
import { parseTarget } from '../archive/parse-target'
import { CLONE_FILE, makeClone, type CloneRecord } from '../clone/clone'
import { openStore } from '../app/open'
import { writeFileAtomic } from '../store/config'
import { syncDir } from '../copy/sync-dir'
import { silentLogger, type Logger } from '../store/logger'
import { createFromReplica, type RecoverResult } from './recover'
import { releaseSourceReader } from './source-link'
import { newestManifest } from './format'
import { isBeingDeleted, recordDependency, releaseDependency, type CloneDependency } from './clone-deps'
import { isAlive } from '../daemon/paths'

/** Marks the hidden parent that `clone <replica>` made (for people and tools: it is a store). */
export const REPLICA_PARENT_FILE = 'replica-parent.json'

/** replica-parent.json: where the hidden parent came from, and the clone's dependency object there. */
export interface ReplicaParentRecord {
  format: 1
  /** The replica (target string). */
  from: string
  manifest: string
  clone: string
  /** The clone's dependency record on the replica (clone-deps.ts); absent in clones made before they existed. */
  dependency?: string
}

/** Where `clone <replica> SNAPSHOT <dir>` keeps the replica's read-only copy: beside the clone, hidden. */
export function replicaParentDir (cloneDir: string): string {
  return path.join(path.dirname(cloneDir), `.${path.basename(cloneDir)}.replica-parent`)
}

export function readReplicaParent (parentDir: string): ReplicaParentRecord | undefined {
  try {
    const r = JSON.parse(fs.readFileSync(path.join(parentDir, REPLICA_PARENT_FILE), 'utf8')) as ReplicaParentRecord
    return r.format === 1 && typeof r.from === 'string' ? r : undefined
  } catch {
    return undefined
  }
}

/** Test hook (LOGDISK_FAULTS=clone-after-dependency): the process dies right after the dependency is put. */
const faultAfterDependency = (): boolean => (process.env.LOGDISK_FAULTS ?? '').split(',').includes('clone-after-dependency')

/**
 * `logdisk clone <replica> <snapshot> <newstore>` (issue 14 item 4, "many hosts boot from one
 * golden image"): the replica is recovered lazily (recover.ts: its index checkpoint, the newest
 * segments; older ones stay on the replica, fetched on demand) into a hidden store beside the
 * clone, which is never written (the clone opens it for reading); then the clone is made from
 * its snapshot as from any store (clone.ts): reads of blocks the clone never wrote fall through
 * to it, and from it to the replica. Needs no lease: the only object it writes to the replica
 * is its dependency record (clone-deps.ts), which makes the writer refuse to delete the
 * snapshot. The record is put before the clone exists: a crash in between leaves a record
 * whose clone is missing, which the writer on this host recognises as stale (another host's
 * writer names it in its refusal, to be removed by hand).
 */
export async function cloneFromReplica (target: ArchiveTarget, spec: string, snapshot: string, dir: string, opts: { log?: Logger } = {}): Promise<{ clone: CloneRecord, parent: string, recovered: RecoverResult, seconds: number, dependency: string }> {
  const started = Date.now()
  dir = path.resolve(dir)
  const parent = replicaParentDir(dir)
  if (fs.existsSync(parent)) throw new LogdiskError('BAD_ARGUMENT', `${parent} exists (a clone of a replica made before at ${dir}?); remove it or choose another directory for the clone`)
  // A snapshot is the same in every manifest that has it: an older one past a damaged newest
  // manifest is as good a base (helper-63: the refusal named an option clone does not have).
  const recovered = await createFromReplica(parent, target, { spec, log: opts.log ?? silentLogger, skipDamagedManifest: true })
  try {
    const { store } = await openStore(parent, {}, [], 'read')
    let snap
    try {
      snap = store.snapshots().find(s => s.name === snapshot)
    } finally {
      await store.close()
    }
    if (!snap) throw new LogdiskError('NOT_FOUND', `the replica ${spec} has no snapshot ${snapshot} (as of ${recovered.manifest})`)
    const dep = await recordDependency(target, snap, dir, recovered.manifest)
    if (faultAfterDependency()) process.exit(70)
    try {
      // After the record is put (the handshake of clone-deps.ts): a deletion begun before it is seen here.
      const gone = `the replica's writer has deleted snapshot ${snapshot} (or is deleting it) since ${recovered.manifest}; nothing was created`
      if (await isBeingDeleted(target, snap.seq)) throw new LogdiskError('NOT_FOUND', gone)
      const newest = await newestManifest(target)
      if (!newest?.manifest.snapshots.some(s => s.seq === snap.seq)) throw new LogdiskError('NOT_FOUND', gone)
      // The clone's record keeps the manifest's segment objects from here on, for as long as the clone lives.
      await releaseSourceReader(parent)
      const record: ReplicaParentRecord = { format: 1, from: spec, manifest: recovered.manifest, clone: dir, dependency: dep.name }
      writeFileAtomic(path.join(parent, REPLICA_PARENT_FILE), JSON.stringify(record, null, 2) + '\n')
      const clone = await makeClone(parent, { name: snap.name, seq: snap.seq, ...(snap.sizeBytes !== undefined ? { sizeBytes: snap.sizeBytes } : {}) }, dir)
      return { clone, parent, recovered, seconds: (Date.now() - started) / 1000, dependency: dep.name }
    } catch (err) {
      await releaseDependency(target, dep.name).catch(() => undefined)
      throw err
    }
  } catch (err) {
    await releaseSourceReader(parent).catch(() => undefined)
    fs.rmSync(parent, { recursive: true, force: true })
    throw err
  }
}

/**
 * Whether a dependency record made on this host still has its clone: the process that makes
 * it still runs, or the directory holds a clone whose hidden parent names this very record.
 */
export function cloneHoldsDependency (dep: CloneDependency): boolean {
  // (This process is not making a clone while it asks: its own pid says nothing.)
  if (isAlive(dep.pid) && dep.pid !== process.pid) return true
  if (!fs.existsSync(path.join(dep.dir, CLONE_FILE))) return false
  return readReplicaParent(replicaParentDir(dep.dir))?.dependency === dep.name
}

/**
 * After `promote` of a clone of a replica (the clone's blocks copied in and fsynced, its
 * clone.json gone): the hidden parent is removed and the dependency on the replica released.
 * In that order: a crash before the release leaves a record the writer here sees as stale
 * (its clone is no clone any more). An unreachable replica leaves the record: the returned
 * warning says which object to remove. Targets other than the one recorded come from
 * `targetFor` (tests: S3 settings).
 */
export async function releaseReplicaParent (cloneDir: string, targetFor: (spec: string) => ArchiveTarget = spec => parseTarget(spec, process.env, { role: 'replica' })): Promise<{ removed: string, warning?: string }> {
  const parent = replicaParentDir(path.resolve(cloneDir))
  const record = readReplicaParent(parent)
  fs.rmSync(parent, { recursive: true, force: true })
  await syncDir(path.dirname(parent)) // the directory entry is gone before the release
  if (!record?.dependency) return { removed: parent }
  let target: ArchiveTarget | undefined
  try {
    target = targetFor(record.from)
    await releaseDependency(target, record.dependency)
    return { removed: parent }
  } catch (err) {
    return { removed: parent, warning: `could not release the clone's dependency ${record.dependency} on ${record.from} (${(err as Error).message}); the writer will refuse to delete the snapshot until it is removed` }
  } finally {
    await target?.close().catch(() => undefined)
  }
}

