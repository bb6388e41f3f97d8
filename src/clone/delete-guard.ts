import { LogdiskError } from '../errors'
import type { Store } from '../store'
import type { ArchiveTarget } from '../archive/target'
import { parseTarget } from '../archive/parse-target'
import { readPolicy } from '../policy/policy'
import { dependenciesOn, describeDependency, markDeleting } from '../replicate/clone-deps'
import { cloneHoldsDependency } from '../replicate/clone-replica'
import { clonesOf, forgetClones, goneClonesOf } from './clone'

/**
 * The one place that decides what deleting a snapshot must respect (`delete`, and snapshot.keep
 * retention): the clones that read through to it. Local clones are in the store's clones.json
 * (clone.ts); clones made from the store's replica, on any host, recorded their dependency on
 * the replica (replicate/clone-deps.ts), which is read here with the `deleting.` handshake. A
 * replica that cannot be read refuses the deletion (IO): a clone may depend on the snapshot.
 * Throws BUSY naming the clones; else deletes the snapshot and returns what the store says.
 */
export async function deleteSnapshotRespectingClones (store: Store, name: string, opts: { targetFor?: (spec: string) => ArchiveTarget, forgetGoneClones?: boolean } = {}): ReturnType<Store['deleteSnapshot']> {
  const snap = store.snapshotNamed(name)
  const local = clonesOf(store.dir, name)
  if (local.length > 0) throw busy(name, local)
  // A recorded clone whose directory is gone was removed, or moved and not opened since (it
  // still reads this snapshot): refused until the user says it was removed (helper-53's D3).
  const gone = goneClonesOf(store.dir, name)
  if (gone.length > 0 && opts.forgetGoneClones !== true) throw goneBusy(name, [...new Set(gone.map(c => c.dir))])
  const spec = readPolicy(store.dir)['replicate.target']
  if (spec === '') return await deleteForgetting(store, name, gone)
  const target = (opts.targetFor ?? (s => parseTarget(s)))(spec)
  try {
    let mark: string
    try {
      mark = await markDeleting(target, snap)
    } catch (err) {
      throw unreachable(name, spec, err)
    }
    let deps
    try {
      deps = await dependenciesOn(target, snap.seq, cloneHoldsDependency)
    } catch (err) {
      await target.delete(mark).catch(() => undefined)
      throw unreachable(name, spec, err)
    }
    if (deps.length > 0) {
      await target.delete(mark).catch(() => undefined)
      throw busy(name, deps.map(describeDependency), spec)
    }
    try {
      return await deleteForgetting(store, name, gone)
    } catch (err) {
      // Not deleted after all: clones of it may be made again.
      await target.delete(mark).catch(() => undefined)
      throw err
    }
  } finally {
    await target.close().catch(() => undefined)
  }
}

/** Deletes the snapshot, then drops the gone clones of it the user said were removed. */
async function deleteForgetting (store: Store, name: string, gone: Array<{ uuid: string }>): ReturnType<Store['deleteSnapshot']> {
  const deleted = await store.deleteSnapshot(name)
  forgetClones(store.dir, gone.map(c => c.uuid))
  return deleted
}

function goneBusy (name: string, gone: string[]): LogdiskError {
  const s = gone.length > 1 ? 's' : ''
  return new LogdiskError('BUSY', `snapshot ${name} is the base of clone${s} ${gone.join(', ')}, no longer there (moved, or removed; the path may hold something else now): a moved clone registers where it is when it is next mounted or written (then delete again); if ${gone.length > 1 ? 'they were' : 'it was'} removed, give --forget-gone-clones`)
}

function busy (name: string, clones: string[], replica?: string): LogdiskError {
  const s = clones.length > 1 ? 's' : ''
  const where = replica === undefined ? '' : ` made from the replica ${replica}`
  const gone = replica === undefined ? '' : `; a clone on another host that is gone: remove its ${clones.length > 1 ? 'objects' : 'object'} from the replica`
  return new LogdiskError('BUSY', `snapshot ${name} is the base of clone${s}${where} ${clones.join(', ')}: promote (logdisk promote <clone>) or remove ${clones.length > 1 ? 'them' : 'it'} first${gone}`)
}

function unreachable (name: string, spec: string, err: unknown): LogdiskError {
  return new LogdiskError('IO', `snapshot ${name} was not deleted: the replica ${spec} cannot be checked for clones that depend on it (${(err as Error).message}); try again when it is reachable`, err)
}
