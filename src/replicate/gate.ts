import fs from 'node:fs'
import path from 'node:path'
import { writeFileAtomic } from '../store/config'
import { readPolicy } from '../policy/policy'

/**
 * What background passes must leave alone for replication: every segment from the first one
 * not yet on the replica. A running Replicator sets it here (in memory); it also keeps it in
 * `<store>/replica.json`, so that a command on the unmounted store (compact, archive) leaves
 * the same segments alone until the next mount ships them.
 */
export const REPLICA_STATE_FILE = 'replica.json'

export interface ReplicaState {
  format: 1
  /** The replica these figures are about (replicate.target). */
  target: string
  /** Segments with an id below this are on the replica, whole. */
  shippedBelow: number
  updatedAt: string
}

const live = new Map<string, number>()

export function readReplicaState (dir: string): ReplicaState | undefined {
  try {
    const s = JSON.parse(fs.readFileSync(path.join(dir, REPLICA_STATE_FILE), 'utf8')) as ReplicaState
    return s.format === 1 && typeof s.shippedBelow === 'number' ? s : undefined
  } catch {
    return undefined
  }
}

export function writeReplicaState (dir: string, target: string, shippedBelow: number): void {
  const s: ReplicaState = { format: 1, target, shippedBelow, updatedAt: new Date().toISOString() }
  writeFileAtomic(path.join(dir, REPLICA_STATE_FILE), JSON.stringify(s, null, 2) + '\n')
}

/** Set by the running replicator of the store at `dir` (undefined: none runs). */
export function setLiveGate (dir: string, shippedBelow: number | undefined): void {
  if (shippedBelow === undefined) live.delete(path.resolve(dir))
  else live.set(path.resolve(dir), shippedBelow)
}

/**
 * The store's `retainFrom` (OpenOptions): Infinity without replication; else the running
 * replicator's figure, or the one it left in replica.json for this target, or 0 (nothing is
 * known to be shipped: keep everything).
 */
export function retainFrom (dir: string): () => number {
  const abs = path.resolve(dir)
  return () => {
    const running = live.get(abs)
    if (running !== undefined) return running
    let target: string
    try {
      target = readPolicy(abs)['replicate.target']
    } catch {
      return 0 // an unreadable policy: keep everything
    }
    if (target === '') return Infinity
    const s = readReplicaState(abs)
    return s !== undefined && s.target === target ? s.shippedBelow : 0
  }
}
