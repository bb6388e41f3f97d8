import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError } from '../errors'
import { decodeArchive } from '../archive/codec'
import { parseTarget } from '../archive/parse-target'
import type { ArchiveTarget } from '../archive/target'
import { RangedReader } from '../archive/ranged-read'
import type { ArchiveLink } from '../store/archive-link'
import { writeFileAtomic } from '../store/config'
import { releaseReader } from './reader-records'

/**
 * A store recovered lazily from a replica (recover.ts) keeps the segments before the replica's
 * index checkpoint there, not locally: `<store>/replica-source.json` names the replica and, for
 * each such segment, the object that holds it. They are `archived` segments whose copy is on
 * the replica: read-only (never put, never deleted), fetched on demand into the bounded cache
 * (Reader.fetchArchived) and in the background (hydrate.ts) until the store has them all.
 */
export const REPLICA_SOURCE_FILE = 'replica-source.json'

export interface ReplicaSource {
  /** The replica (a directory or s3://bucket/prefix). */
  target: string
  /** The manifest recovered from. */
  manifest: string
  /** Segment id -> object on the replica. */
  segments: Record<string, string>
  /** The store's reader record on the replica (reader-records.ts), deleted once every segment is local. */
  reader?: string
}

export function readReplicaSource (dir: string): ReplicaSource | undefined {
  const file = path.join(dir, REPLICA_SOURCE_FILE)
  let text: string
  try { text = fs.readFileSync(file, 'utf8') } catch { return undefined }
  try {
    const s = JSON.parse(text) as ReplicaSource
    if (typeof s.target !== 'string' || typeof s.segments !== 'object' || s.segments === null) throw new Error('missing fields')
    return s
  } catch (err) {
    throw new LogdiskError('BAD_CONFIG', `${file} is damaged (${(err as Error).message}); the store's older segments are on the replica it names: restore the file or recover again`, err)
  }
}

export function writeReplicaSource (dir: string, source: ReplicaSource): void {
  writeFileAtomic(path.join(dir, REPLICA_SOURCE_FILE), JSON.stringify(source, null, 1) + '\n')
}

/**
 * Targets a caller already made for a replica (createFromReplica's, with its settings), used
 * before parsing the spec again from the environment: a library user's S3 settings need not
 * be in process.env.
 */
const knownTargets = new Map<string, ArchiveTarget>()

export function useReplicaTarget (spec: string, target: ArchiveTarget): void {
  knownTargets.set(spec, target)
}

function replicaTarget (spec: string): ArchiveTarget {
  return knownTargets.get(spec) ?? parseTarget(spec, process.env, { role: 'replica' })
}

/**
 * Deletes the store's reader record on the replica (its segments are all local, or a clone's
 * own record now keeps them, or it holds the replica now) and forgets it; nothing to do without
 * one. `target`: the replica, if the caller has it open. Throws what the
 * replica throws: the caller retries later.
 */
export async function releaseSourceReader (dir: string, target?: ArchiveTarget): Promise<void> {
  const source = readReplicaSource(dir)
  if (source?.reader === undefined) return
  await releaseReader(target ?? replicaTarget(source.target), source.reader)
  const { reader: _, ...rest } = source
  writeReplicaSource(dir, rest)
}

/**
 * The store's archive link with the replica's segments in front: `get` of a segment the
 * replica holds for this store reads it there; everything else (and every `put`) goes to the
 * store's own archive target, if it has one.
 */
export function replicaSourceLink (source: ReplicaSource, own: ArchiveLink | undefined, target?: ArchiveTarget): ArchiveLink {
  let t = target
  const replica = (): ArchiveTarget => (t ??= replicaTarget(source.target))
  const ranged = new RangedReader(replica)
  return {
    async put (id, data) {
      if (!own) throw new LogdiskError('NOT_FOUND', `segment ${id} cannot be archived: the store has no archive target (logdisk policy set <store> archive.target=...); the replica it was recovered from (${source.target}) is only read`)
      await own.put(id, data)
    },
    async get (id) {
      const name = source.segments[String(id)]
      if (name === undefined) {
        if (!own) throw new LogdiskError('NOT_FOUND', `segment ${id} is neither on the replica ${source.target} nor on an archive target`)
        return await own.get(id)
      }
      const raw = await replica().get(name)
      try {
        return await decodeArchive(raw)
      } catch (err) {
        if (err instanceof LogdiskError) throw new LogdiskError(err.code, `${source.target}: ${name} (segment ${id}): ${err.message}`, err)
        throw err
      }
    },
    async getRange (id, offset, length) {
      const name = source.segments[String(id)]
      if (name === undefined) return await own?.getRange?.(id, offset, length)
      try {
        return await ranged.read(name, offset, length)
      } catch (err) {
        if (err instanceof LogdiskError) throw new LogdiskError(err.code, `${source.target}: ${name} (segment ${id}): ${err.message}`, err)
        throw err
      }
    },
    async list () {
      const ids = new Set(Object.keys(source.segments).map(Number))
      for (const id of own ? await own.list() : []) ids.add(id)
      return [...ids].sort((a, b) => a - b)
    },
    describe: () => own ? `${source.target} (replica) and ${own.describe()}` : `${source.target} (replica)`,
    // The replica takes no puts from here: without an archive target of its own, the store
    // keeps history as one without backing storage does.
    readOnly: own === undefined
  }
}
