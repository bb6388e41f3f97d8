import { isLogdiskError } from '../errors'
import type { ArchiveTarget } from '../archive/target'
import { DEPENDENCY_PREFIX, type CloneDependency } from './clone-deps'
import { READER_PREFIX } from './reader-records'
import { MANIFEST_PREFIX, decodeManifest, parseManifestName, type Manifest } from './format'

/**
 * What older generations left on a replica (docs/REPLICATION.md "Garbage"). A holder's garbage
 * list is in memory: a writer that crashes loses what it had queued (superseded tails and index
 * checkpoints, old manifest versions); its generation's last manifests were never queued; and
 * objects it put just before the crash, or after a takeover fenced it, are named by no manifest
 * of the chain. The next generation's holder finds them by listing: every object named for a
 * generation below its own, except
 *
 *  - what its own state names (segments, tails, index: its manifests inherit the older
 *    generations' segment objects, which a lazily recovered store reads by name for as long
 *    as it lives) and what its own garbage list will delete after the grace period;
 *  - for every clone of the replica (`clone-dep.` records, clone-deps.ts): the manifest its
 *    hidden parent was recovered from and the segment objects that manifest names (all
 *    inherited, unless it was a fenced holder's late manifest read in the moment of a
 *    takeover). A record that names no manifest (an older release's), cannot be read, or names
 *    a manifest that cannot be read keeps every older segment object: which ones its clone
 *    reads is not known;
 *  - for every store recovered lazily that still reads segment objects on the replica
 *    (`reader.` records, reader-records.ts): the manifest it was recovered from and the segment
 *    objects that names, as for a clone.
 *
 * Deletion order (`manifests` before `objects`, each oldest first): a manifest goes before any
 * object it names, so at every point of a crashed sweep each manifest left on the replica still
 * names only objects that are there (a recovery that falls back past a damaged newest manifest
 * finds them), and the next sweep finishes the rest.
 */

/** The generation that wrote a replica object (`gG.…`, `manifest.gG.vV`); undefined for any other (lease, clone records, an archive's objects). */
export function objectGeneration (name: string): number | undefined {
  const m = /^(?:manifest\.)?g(\d{6})\./.exec(name)
  if (!m) return undefined
  if (name.startsWith(MANIFEST_PREFIX) && parseManifestName(name) === undefined) return undefined
  return Number(m[1])
}

/** Every object a manifest (or a holder's state) names. */
export function namedObjects (m: Pick<Manifest, 'segments' | 'tails' | 'index'>): string[] {
  const names = [...Object.values(m.segments), ...Object.values(m.tails).flat().map(p => p.name)]
  if (m.index) names.push(m.index.name)
  return names
}

export interface OldGenerationSweep {
  /** To delete first: manifests of older generations, oldest first. */
  manifests: string[]
  /** Then: their data objects that nothing named keeps. */
  objects: string[]
  /** Manifests kept because a clone of the replica, or a store recovered lazily, was made from them. */
  keptForClones: string[]
  /** A clone record that names no readable manifest: every older segment object is kept. */
  segmentsKept: boolean
}

/**
 * The objects of generations below `generation` on `target` that may be deleted, given `keep`
 * (what the holder's state and garbage list name). Reads only; IO errors throw (nothing is
 * then deleted).
 */
export async function planOldGenerationSweep (target: ArchiveTarget, generation: number, keep: Set<string>): Promise<OldGenerationSweep> {
  const older = [...await target.list(MANIFEST_PREFIX), ...await target.list('g')]
    .filter(n => (objectGeneration(n) ?? generation) < generation)
  const records = await keptByRecords(target)
  const kept = new Set([...keep, ...records.kept])
  const isManifest = (n: string): boolean => n.startsWith(MANIFEST_PREFIX)
  const deletable = older.filter(n => !kept.has(n) && !(records.segmentsKept && isSegmentObject(n))).sort()
  return { manifests: deletable.filter(isManifest), objects: deletable.filter(n => !isManifest(n)), keptForClones: records.keptForClones, segmentsKept: records.segmentsKept }
}

/**
 * Of a plan's `objects`, asked once its manifests are deleted: those that no record asks to
 * keep now. A lazy recovery puts its record and then checks that its manifest is still there
 * (reader-records.ts): if it was there, this listing, which comes after the manifests' deletion,
 * sees the record; if not, the recovery starts again from the newest manifest.
 */
export async function stillDeletable (target: ArchiveTarget, objects: string[]): Promise<string[]> {
  const records = await keptByRecords(target)
  return objects.filter(n => !records.kept.has(n) && !(records.segmentsKept && isSegmentObject(n)))
}

const isSegmentObject = (n: string): boolean => /^g\d{6}\.seg-/.test(n)

/** What the clone and reader records on the replica keep: each one's manifest and the segment objects it names. */
async function keptByRecords (target: ArchiveTarget): Promise<{ kept: Set<string>, keptForClones: string[], segmentsKept: boolean }> {
  const kept = new Set<string>()
  const keptForClones = new Set<string>()
  let segmentsKept = false
  for (const record of [...await target.list(DEPENDENCY_PREFIX), ...await target.list(READER_PREFIX)]) {
    const from = await cloneManifest(target, record)
    if (from === null) continue // released meanwhile
    if (from === undefined) {
      segmentsKept = true
      continue
    }
    kept.add(from.name)
    keptForClones.add(from.name)
    for (const seg of Object.values(from.manifest.segments)) kept.add(seg)
  }
  return { kept, keptForClones: [...keptForClones], segmentsKept }
}

/**
 * The manifest a clone record says its hidden parent was recovered from (or a reader record,
 * its store). null: the record is
 * gone; undefined: it names none, or it or that manifest cannot be read (damaged, or deleted
 * before the record was put).
 */
async function cloneManifest (target: ArchiveTarget, record: string): Promise<{ name: string, manifest: Manifest } | null | undefined> {
  let dep: Partial<CloneDependency>
  try {
    dep = JSON.parse((await target.get(record)).toString('utf8')) as Partial<CloneDependency>
  } catch (err) {
    if (isLogdiskError(err, 'NOT_FOUND')) return null
    if (err instanceof SyntaxError || isLogdiskError(err, 'CORRUPT')) return undefined
    throw err
  }
  if (typeof dep?.manifest !== 'string' || parseManifestName(dep.manifest) === undefined) return undefined
  try {
    return { name: dep.manifest, manifest: decodeManifest(`${target.describe()}: ${dep.manifest}`, await target.get(dep.manifest)) }
  } catch (err) {
    if (isLogdiskError(err, 'NOT_FOUND') || isLogdiskError(err, 'CORRUPT') || isLogdiskError(err, 'BAD_CONFIG')) return undefined
    throw err
  }
}
