import { LogdiskError } from '../errors'
import { exactSize, formatBytes } from '../size-text'
import type { SnapshotRecord, Store, VolumeIdPolicy } from '../store'
import { BlockSetHash } from './block-set-hash'
import { contentIdentity, currentSeq } from './content-identity'
import { rememberIdentities } from './identity-cache'
import { readAhead } from './image-chunks'
import { carryIdentity, setIdentitiesAt } from './set-identity'
import { identitySchemeOf, readStream, validateStream, type StreamSummary } from './stream-format'

export interface ReceiveResult {
  snapshot: SnapshotRecord
  from: string | null
  identity: string
  dataBlocks: number
  zeroBlocks: number
  /** Blocks of the current volume written back to the base because of --force. */
  rolledBack: number
}

function inRanges (ranges: Array<[number, number]>): (block: number) => boolean {
  let i = 0
  return block => { // blocks are asked in increasing order
    while (i < ranges.length && ranges[i][0] + ranges[i][1] <= block) i++
    return i < ranges.length && ranges[i][0] <= block
  }
}

/**
 * Applies a stream file to the store and cuts the same snapshot there. The whole stream is
 * checked first (validateStream), then the store: same geometry, no snapshot of that name yet,
 * an incremental's base present with the same content identity, and the current volume
 * unwritten since that base (or empty, for a full stream) unless `force`, which rolls the
 * current volume back to the base first. Any refusal leaves the store unchanged. Before the
 * cut the current volume's identity must equal the snapshot's, or no snapshot is cut.
 */
export async function receiveStream (
  store: Store, file: string,
  opts: { force?: boolean, idPolicy?: VolumeIdPolicy, onProgress?: (done: number, total: number) => void } = {}
): Promise<ReceiveResult> {
  const B = store.blockBytes
  let summary: StreamSummary
  try {
    summary = await validateStream(file, done => opts.onProgress?.(Math.min(done, store.sizeBytes) / 2, store.sizeBytes))
  } catch (err) {
    if (err instanceof LogdiskError) throw new LogdiskError(err.code, `${err.message}; nothing was applied to ${store.dir}`, err)
    throw err
  }
  const { header } = summary
  if (header.blockBytes !== B || header.sizeBytes !== store.sizeBytes) {
    throw new LogdiskError('BAD_ARGUMENT', `the stream is of a ${exactSize(header.sizeBytes)} volume with ${formatBytes(header.blockBytes)} blocks but ${store.dir} is ${exactSize(store.sizeBytes)} with ${formatBytes(B)} blocks; receive into a store created with the same --size and --block-size`)
  }
  const have = store.snapshots()
  if (have.some(s => s.name === header.snapshot.name)) {
    throw new LogdiskError('BAD_ARGUMENT', `${store.dir} already has a snapshot named ${header.snapshot.name}`)
  }
  // Format 1 streams carry c1 identities, which only a walk of every block gives; format 2's
  // c2 identities are carried from the base's (kept in the identity file, or walked once).
  const c2 = identitySchemeOf(header.format) === 'c2'
  let baseIdentity: string | undefined
  let base: SnapshotRecord | undefined
  if (header.from) {
    base = have.find(s => s.name === header.from!.name)
    if (!base) {
      throw new LogdiskError('NOT_FOUND', `${store.dir} has no snapshot ${header.from.name}, the base of this incremental stream; receive ${header.from.name} first (or send a full stream)`)
    }
    const identity = c2 ? (await setIdentitiesAt(store, [base.seq]))[0] : await contentIdentity(store, base.seq)
    baseIdentity = identity
    if (identity !== header.from.identity) {
      throw new LogdiskError('BAD_ARGUMENT', `snapshot ${base.name} of ${store.dir} is not the stream's base ${header.from.name}: its content identity is ${identity}, the stream needs ${header.from.identity}`)
    }
  }
  const baseSeq = base ? base.seq : 0
  const dirty: number[] = []
  for await (const block of store.changedBlocks(baseSeq, currentSeq(store))) dirty.push(block)
  if (dirty.length > 0 && !opts.force) {
    throw new LogdiskError('BAD_ARGUMENT', base
      ? `the current volume of ${store.dir} was written since snapshot ${base.name} (${dirty.length} blocks); give --force to roll it back to ${base.name} and receive`
      : `the current volume of ${store.dir} is not empty (${dirty.length} blocks written); a full stream needs an empty store, or --force to overwrite the current volume`)
  }

  // Checked: now apply.
  // The next records are read (and their CRCs checked) while this one is written.
  for await (const r of readAhead(readStream(file), 4)) {
    if ('header' in r || 'trailer' in r) continue
    const data = r.type === 'data' ? r.data : Buffer.alloc(r.count * B)
    await store.write(r.block * B, data)
    opts.onProgress?.(store.sizeBytes / 2 + Math.min((r.block + r.count) * B, store.sizeBytes) / 2, store.sizeBytes)
  }
  let rolledBack = 0
  if (dirty.length > 0) {
    const covered = inRanges(summary.ranges)
    const zero = Buffer.alloc(B)
    for (const block of dirty) {
      if (covered(block)) continue
      const data = baseSeq > 0 ? await store.readBlockAt(baseSeq, block) : zero
      const now = await store.read(block * B, B)
      if (now.equals(data)) continue
      await store.write(block * B, data)
      rolledBack++
    }
  }
  await store.flush()
  // A c2 identity of the current volume is carried from the base's (from the empty image at
  // cut 0 for a full stream) across the blocks written since: the ones just received, and
  // those --force rolled back.
  const appliedSeq = currentSeq(store)
  const identity = c2
    ? await carryIdentity(store, baseIdentity ?? BlockSetHash.empty(store.sizeBytes, B).toString(), baseSeq, appliedSeq)
    : await contentIdentity(store, appliedSeq)
  if (identity !== header.snapshot.identity) {
    throw new LogdiskError('CORRUPT', `after applying the stream the current volume of ${store.dir} is not ${header.snapshot.name} (identity ${identity}, expected ${header.snapshot.identity}); was it written meanwhile? No snapshot was cut`)
  }
  // The snapshot keeps the time it was taken at its origin (as zfs receive keeps `creation`).
  const snapshot = await store.snapshot({ name: header.snapshot.name, frozen: header.snapshot.frozen, idPolicy: opts.idPolicy, createdMs: header.snapshot.timeMs })
  // Checked against the stream just now: the next incremental receive onto it carries it.
  // Only if the cut directly follows what was checked (nothing was written in between).
  if (c2 && snapshot.seq === appliedSeq + 1) await rememberIdentities(store, new Map([[snapshot.seq, identity]]))
  opts.onProgress?.(store.sizeBytes, store.sizeBytes)
  return { snapshot, from: header.from?.name ?? null, identity, dataBlocks: summary.trailer.dataBlocks, zeroBlocks: summary.trailer.zeroBlocks, rolledBack }
}
