import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError } from '../errors'
import type { ArchiveTarget } from '../archive/target'
import { makeClone, type CloneRecord } from '../clone/clone'
import { openStore } from '../app/open'
import { writeFileAtomic } from '../store/config'
import { silentLogger, type Logger } from '../store/logger'
import { createFromReplica, type RecoverResult } from './recover'

/** Marks the hidden parent that `clone <replica>` made (for people and tools: it is a store). */
export const REPLICA_PARENT_FILE = 'replica-parent.json'

/** Where `clone <replica> SNAPSHOT <dir>` keeps the replica's read-only copy: beside the clone, hidden. */
export function replicaParentDir (cloneDir: string): string {
  return path.join(path.dirname(cloneDir), `.${path.basename(cloneDir)}.replica-parent`)
}

/**
 * `logdisk clone <replica> <snapshot> <newstore>` (issue 14 item 4, "many hosts boot from one
 * golden image"): the replica is recovered lazily (recover.ts: its index checkpoint, the newest
 * segments; older ones stay on the replica, fetched on demand) into a hidden store beside the
 * clone, which is never written (the clone opens it for reading); then the clone is made from
 * its snapshot as from any store (clone.ts): reads of blocks the clone never wrote fall through
 * to it, and from it to the replica. Needs no lease: nothing is written to the replica.
 */
export async function cloneFromReplica (target: ArchiveTarget, spec: string, snapshot: string, dir: string, opts: { log?: Logger } = {}): Promise<{ clone: CloneRecord, parent: string, recovered: RecoverResult, seconds: number }> {
  const started = Date.now()
  dir = path.resolve(dir)
  const parent = replicaParentDir(dir)
  if (fs.existsSync(parent)) throw new LogdiskError('BAD_ARGUMENT', `${parent} exists (a clone of a replica made before at ${dir}?); remove it or choose another directory for the clone`)
  const recovered = await createFromReplica(parent, target, { spec, log: opts.log ?? silentLogger })
  try {
    const { store } = await openStore(parent, {}, [], 'read')
    let snap
    try {
      snap = store.snapshots().find(s => s.name === snapshot)
    } finally {
      await store.close()
    }
    if (!snap) throw new LogdiskError('NOT_FOUND', `the replica ${spec} has no snapshot ${snapshot} (as of ${recovered.manifest})`)
    writeFileAtomic(path.join(parent, REPLICA_PARENT_FILE), JSON.stringify({ format: 1, from: spec, manifest: recovered.manifest, clone: dir }, null, 2) + '\n')
    const clone = await makeClone(parent, { name: snap.name, seq: snap.seq }, dir)
    return { clone, parent, recovered, seconds: (Date.now() - started) / 1000 }
  } catch (err) {
    fs.rmSync(parent, { recursive: true, force: true })
    throw err
  }
}
