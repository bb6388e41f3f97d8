import crypto from 'node:crypto'
import { LogdiskError, isLogdiskError } from '../errors'
import type { ArchiveTarget } from '../archive/target'
import { readLease } from '../archive/lease'

/**
 * The objects of a replica (docs/REPLICATION.md, docs/FORMAT.md "Replica objects"). Every data
 * object is immutable and carries the lease generation that wrote it in its name, so a fenced
 * holder's late writes can never replace what the new holder references. The manifest chain
 * is the commit point: a manifest names only objects that were put (and verified) before it.
 */

export const MANIFEST_FORMAT = 1
export const MANIFEST_PREFIX = 'manifest.'

const pad = (n: number, w: number): string => String(n).padStart(w, '0')

export function segmentObject (generation: number, id: number): string {
  return `g${pad(generation, 6)}.seg-${pad(id, 12)}.ldarch`
}

export function tailObject (generation: number, id: number, from: number, to: number): string {
  return `g${pad(generation, 6)}.tail-${pad(id, 12)}-${pad(from, 12)}-${pad(to, 12)}.ldarch`
}

/** An index checkpoint covering the log up to sequence `seq` (index-checkpoint.ts). */
export function indexObject (generation: number, seq: number): string {
  return `g${pad(generation, 6)}.index-${pad(seq, 12)}.ldarch`
}

export function manifestObject (generation: number, version: number): string {
  return `${MANIFEST_PREFIX}g${pad(generation, 6)}.v${pad(version, 12)}`
}

export function parseManifestName (name: string): { generation: number, version: number } | undefined {
  const m = /^manifest\.g(\d{6})\.v(\d{12})$/.exec(name)
  return m ? { generation: Number(m[1]), version: Number(m[2]) } : undefined
}

export interface TailPart { name: string, from: number, to: number }

/** The last entry the replica holds: where it ends, and what it is (to tell two histories apart). */
export interface ShippedPoint {
  /** Log position just past the entry (segmentId * segmentBytes + offset). */
  position: number
  seq: number
  /** The entry at `seq` as the index records it: kind, time, position. */
  entry: { kind: number, timeMs: number, position: number } | null
}

export interface Manifest {
  format: number
  generation: number
  version: number
  /** The manifest this one follows (null for the first of a replica). */
  previous: string | null
  writtenAt: string
  host: string
  pid: number
  /** store.json of the replicated store, as it is on disk. */
  store: Record<string, unknown>
  /** policy.json (null: defaults). */
  policy: Record<string, unknown> | null
  /** Sealed segments, whole: segment id -> object. */
  segments: Record<string, string>
  /** Segments shipped in parts (the current one): id -> parts from byte 0, contiguous. */
  tails: Record<string, TailPart[]>
  /** Where the replica ends: recovery rebuilds the log exactly up to here. */
  point: ShippedPoint
  /** For people and `snapshots` on a replica: the log's markers carry the same. */
  snapshots: Array<{ name: string, id: number | null, seq: number, timeMs: number }>
  horizonSeq: number
  /**
   * The newest index checkpoint (absent in manifests written before they existed, null when
   * none was shipped yet): recovery loads it and scans only the log after `position`.
   */
  index?: { name: string, seq: number, position: number } | null
  /** sha256 (hex) of this JSON with `sha256` set to "". */
  sha256: string
}

export function encodeManifest (m: Omit<Manifest, 'sha256'>): Buffer {
  const body = { ...m, sha256: '' }
  const sha256 = crypto.createHash('sha256').update(JSON.stringify(body)).digest('hex')
  return Buffer.from(JSON.stringify({ ...body, sha256 }, null, 1) + '\n')
}

export function decodeManifest (where: string, data: Buffer): Manifest {
  let m: Manifest
  try {
    m = JSON.parse(data.toString('utf8')) as Manifest
  } catch (err) {
    throw new LogdiskError('CORRUPT', `${where}: not a replica manifest (unreadable JSON)`, err)
  }
  if (typeof m !== 'object' || m === null || typeof m.format !== 'number') throw new LogdiskError('CORRUPT', `${where}: not a replica manifest`)
  if (m.format !== MANIFEST_FORMAT) throw new LogdiskError('BAD_CONFIG', `${where}: replica manifest format ${m.format}; this logdisk reads format ${MANIFEST_FORMAT}`)
  const check = crypto.createHash('sha256').update(JSON.stringify({ ...m, sha256: '' })).digest('hex')
  if (check !== m.sha256) throw new LogdiskError('CORRUPT', `${where}: replica manifest checksum mismatch`)
  return m
}

/**
 * The manifest recovery trusts: the newest one of a generation the lease has reached (a
 * fenced holder's late manifests of an older generation sort below the new holder's first).
 * A damaged newest version is skipped for the one before it, after `onDamaged` (which may
 * throw: recovery refuses to go back in time without a word, helper-60). undefined: no
 * manifest at all.
 */
export async function newestManifest (target: ArchiveTarget, onDamaged?: (name: string, err: LogdiskError) => void): Promise<{ name: string, manifest: Manifest } | undefined> {
  const lease = await readLease(target).catch(() => undefined)
  const names = (await target.list(MANIFEST_PREFIX))
    .map(n => ({ n, p: parseManifestName(n) }))
    .filter(x => x.p !== undefined && (lease === undefined || x.p.generation <= lease.generation))
    .map(x => x.n)
    .sort()
  for (let i = names.length - 1; i >= 0; i--) {
    try {
      return { name: names[i], manifest: decodeManifest(`${target.describe()}: ${names[i]}`, await target.get(names[i])) }
    } catch (err) {
      // Deleted as old garbage while listing, or damaged: the one before it still describes a replica.
      if (!isLogdiskError(err, 'NOT_FOUND') && !isLogdiskError(err, 'CORRUPT')) throw err
      if (isLogdiskError(err, 'CORRUPT')) onDamaged?.(names[i], err)
    }
  }
  return undefined
}
