import { LogdiskError, isLogdiskError } from '../errors'
import type { ArchiveTarget } from '../archive/target'
import { putRecord, recordName, recordOrigin } from './clone-deps'

/**
 * A store recovered lazily (recover.ts) reads the segment objects of the manifest it was
 * recovered from until its background fetch (hydrate.ts) has brought them all back. When the
 * replica's holder does not continue that manifest (a fenced holder's late manifest read in the
 * moment of a takeover, or a damaged newest manifest a restart skipped), the objects only it
 * names are an older generation's garbage to the holder's sweep (old-generations.ts), which
 * would delete what the store still reads. So the recovery records on the replica, beside the
 * clones' records (clone-deps.ts):
 *
 *   reader.<32 hex>   JSON ReaderRecord: a store that reads the segment objects `manifest` names
 *
 * put before the store is built and checked against the manifest after (a sweep that listed
 * the records before the put deletes that manifest first, so the check sees it gone and the
 * recovery starts again from the newest one). The store keeps the record's name in
 * `replica-source.json` and deletes it once every segment is local; one that is removed with
 * `rm` leaves its record, which keeps those objects (space, never data) until it is removed by
 * hand. Recovery and replication ignore the prefix.
 */
export const READER_PREFIX = 'reader.'

export interface ReaderRecord {
  format: 1
  name: string
  /** The manifest the store was recovered from: the sweep keeps it and the segment objects it names. */
  manifest: string
  host: string
  dir: string
  pid: number
  createdAt: string
}

export async function recordReader (target: ArchiveTarget, dir: string, manifest: string): Promise<ReaderRecord> {
  return await putRecord<ReaderRecord>(target, { format: 1, name: recordName(READER_PREFIX), manifest, ...recordOrigin(dir) })
}

/** Deletes a reader record (its store has every segment, or its recovery failed); one already gone is fine. */
export async function releaseReader (target: ArchiveTarget, name: string): Promise<void> {
  if (!name.startsWith(READER_PREFIX)) throw new LogdiskError('BAD_ARGUMENT', `${name} is not a reader record (${READER_PREFIX}...)`)
  try {
    await target.delete(name)
  } catch (err) {
    if (!isLogdiskError(err, 'NOT_FOUND')) throw err
  }
}
