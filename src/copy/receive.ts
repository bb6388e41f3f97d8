import { refuseOnClone } from '../clone/clone'
import { LogdiskError } from '../errors'
import { exactSize, formatBytes } from '../size-text'
import { crc32c, type SnapshotRecord, type Store, type VolumeIdPolicy } from '../store'
import { BlockSetHash } from './block-set-hash'
import { contentIdentity, currentSeq } from './content-identity'
import { rememberIdentities } from './identity-cache'
import { clearApplying, markApplying } from './receive-marker'
import { readAhead } from './image-chunks'
import { ABSENT, carryIdentity, setIdentitiesAt } from './set-identity'
import { identitySchemeOf, maxRecordBytes, readStream, validateStream, type StreamRecord, type StreamSummary } from './stream-format'

/** Writes of a stream applied at once (at most), and their bytes: bounds the memory held. */
const WRITES_IN_FLIGHT = 256
const BYTES_IN_FLIGHT = 16 * 1024 * 1024
/** Stream records read ahead of the writes. */
const READ_AHEAD = 4
/**
 * A stream file of at most this many bytes is read once: checked, and its records kept in
 * memory to be applied (within the bytes a receive holds anyway, BYTES_IN_FLIGHT).
 */
const KEEP_STREAM_BYTES = 16 * 1024 * 1024
/** Blocks located at once when the base's pairs are summed. */
const LOCATE_BLOCKS = 8192
/** Blocks whose CRC before the stream is remembered for the identity carry (about 80 bytes each). */
const MAX_REMEMBERED_BLOCKS = 1 << 20

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
 * checked first (validateStream; a file of at most `keepStreamBytes`, 16 MiB by default, is
 * read only then, its checked records kept to be applied), then the store: same geometry, a
 * snapshot name and volume id the cut will take, an incremental's base present with the same
 * content identity, the current volume unwritten since that base (or empty, for a full
 * stream) unless `force`, which rolls the current volume back to the base first, and (c2
 * streams) that the stream's blocks over the base make the snapshot's identity. Any refusal
 * leaves the store unchanged: a stream whose records and CRCs were sound but whose blocks
 * were not the snapshot's (a record left out, a block changed and its CRCs made again) was
 * written in before it was refused (a hostile test, helper-53). Before the cut the current
 * volume's identity must equal the snapshot's, or no snapshot is cut (a writer on a mounted
 * store; a c1 stream, whose identity needs a walk of the result); and if something wrote
 * between that check and the cut, the cut's identity too, or it is deleted.
 */
export async function receiveStream (
  store: Store, file: string,
  opts: { force?: boolean, idPolicy?: VolumeIdPolicy, onProgress?: (done: number, total: number) => void, keepStreamBytes?: number } = {}
): Promise<ReceiveResult> {
  const state = { applying: false }
  // No resize while the stream is checked and applied (BUSY): a shrink accepted meanwhile cut
  // part of the applied stream off, and the receive failed as if the volume had been written
  // (helper-86 D6).
  const release = store.holdSize(`a receive applies a stream to it (${file})`)
  try {
    return await receiveChecked(store, file, opts, state)
  } catch (err) {
    // Failed after its first write: the volume holds part of the stream, whether or not the
    // process that wrote it lives on (a daemon does; its marker was read as no marker, and the
    // next receive blamed the user's writes again: helper-64).
    if (state.applying) markApplying(store.dir, undefined, true)
    throw err
  } finally {
    release()
  }
}

async function receiveChecked (
  store: Store, file: string,
  opts: { force?: boolean, idPolicy?: VolumeIdPolicy, onProgress?: (done: number, total: number) => void, keepStreamBytes?: number },
  state: { applying: boolean }
): Promise<ReceiveResult> {
  // A clone's unwritten blocks read from its parent's snapshot, which neither the identities
  // nor the checks below (empty store, nothing written since the base) see: its images would
  // look emptier than they are, and a stream onto the wrong image would be accepted.
  refuseOnClone(store.dir, 'receive')
  const B = store.blockBytes
  let summary: StreamSummary
  // The (block, CRC) pairs of the stream's non-zero blocks, summed as it is checked (c2).
  const zeroCrc = crc32c(Buffer.alloc(B))
  const streamPairs = BlockSetHash.pairsOnly()
  const addPairs = (r: StreamRecord): void => {
    if (r.type !== 'data' || !r.crcs) return
    const crcs = r.crcs
    streamPairs.update(1, Float64Array.from({ length: r.count }, (_, i) => r.block + i), crcs, i => crcs[i] !== zeroCrc)
  }
  try {
    summary = await validateStream(file, done => opts.onProgress?.(Math.min(done, store.sizeBytes) / 2, store.sizeBytes), { keepBytes: opts.keepStreamBytes ?? KEEP_STREAM_BYTES, onRecord: addPairs })
  } catch (err) {
    if (err instanceof LogdiskError) throw new LogdiskError(err.code, `${err.message}; nothing was applied to ${store.dir}`, err)
    throw err
  }
  const { header } = summary
  if (header.blockBytes !== B || header.sizeBytes !== store.sizeBytes) {
    // Only the size can be changed in place (logdisk resize); the block size is fixed at create.
    const fix = header.blockBytes !== B
      ? 'receive into a store created with the same --size and --block-size'
      : `logdisk resize ${store.dir} --size ${header.sizeBytes} first, or receive into a store created with that --size`
    throw new LogdiskError('BAD_ARGUMENT', `the stream is of a ${exactSize(header.sizeBytes)} volume with ${formatBytes(header.blockBytes)} blocks but ${store.dir} is ${exactSize(store.sizeBytes)} with ${formatBytes(B)} blocks; ${fix}`)
  }
  const have = store.snapshots()
  if (have.some(s => s.name === header.snapshot.name)) {
    throw new LogdiskError('BAD_ARGUMENT', `${store.dir} already has a snapshot named ${header.snapshot.name}`)
  }
  // The cut's own checks, before anything is written (an invalid name was refused at the cut,
  // after every record had been written).
  try {
    store.checkSnapshot({ name: header.snapshot.name, idPolicy: opts.idPolicy })
  } catch (err) {
    if (err instanceof LogdiskError) throw new LogdiskError(err.code, `the stream's snapshot cannot be cut in ${store.dir}: ${err.message}; nothing was applied`, err)
    throw err
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
  // The point this check covers; the identity carry below starts from it, so a write that
  // lands while the check runs is among the blocks carried across, and caught.
  const checkedSeq = currentSeq(store)
  for await (const block of store.changedBlocks(baseSeq, checkedSeq)) dirty.push(block)
  if (dirty.length > 0 && !opts.force) {
    throw new LogdiskError('BAD_ARGUMENT', base
      ? `the current volume of ${store.dir} was written since snapshot ${base.name} (${dirty.length} blocks); give --force to roll it back to ${base.name} and receive`
      : `the current volume of ${store.dir} is not empty (${dirty.length} blocks written); a full stream needs an empty store, or --force to overwrite the current volume`)
  }

  // With nothing written since the base, the current volume is the base: its identity is the
  // base's, and the CRCs of the blocks the stream rewrites, read from the block map here (up to
  // MAX_REMEMBERED_BLOCKS of them), spare the carry after the apply an index seek per block.
  const startSeq = checkedSeq
  const atStart = c2 && baseSeq > 0 && dirty.length === 0 ? new Map<number, number>() : undefined

  // What the volume will be: the base, its blocks the stream covers swapped for the stream's
  // (the dirty ones it does not cover go back to the base). The base's pairs of those blocks
  // come from the current volume's block map when nothing was written since the base.
  if (c2) {
    const expected = BlockSetHash.parse(baseIdentity ?? BlockSetHash.empty(store.sizeBytes, B).toString())!
    if (baseSeq > 0) {
      const at = dirty.length === 0 ? checkedSeq : baseSeq
      for (const [first, count] of summary.ranges) {
        for (let b = first; b < first + count; b += LOCATE_BLOCKS) {
          const n = Math.min(LOCATE_BLOCKS, first + count - b)
          const { where, crcs } = await store.locateAt(at, b, n)
          expected.update(-1, Float64Array.from({ length: n }, (_, i) => b + i), crcs, i => where[i] >= 0 && crcs[i] !== zeroCrc)
          for (let i = 0; i < n && atStart && atStart.size < MAX_REMEMBERED_BLOCKS; i++) atStart.set(b + i, where[i] >= 0 && crcs[i] !== zeroCrc ? crcs[i] : ABSENT)
        }
      }
    }
    expected.add(streamPairs)
    if (expected.toString() !== header.snapshot.identity) {
      throw new LogdiskError('CORRUPT', `the stream's blocks do not make snapshot ${header.snapshot.name} from ${base ? `snapshot ${base.name}` : 'an empty volume'} (they make identity ${expected.toString()}, the stream says ${header.snapshot.identity}): the stream was altered or made wrongly; nothing was applied to ${store.dir}`)
    }
  }

  // Checked: now apply. Until the snapshot is cut the store says a receive is part way.
  markApplying(store.dir, base?.name)
  state.applying = true
  // Writes go in a bounded window, so small ones share a group commit (the log appender's);
  // every block of a stream is distinct, so their order does not matter.
  const inFlight: Array<Promise<void>> = []
  let inFlightBytes = 0
  const settle = async (): Promise<void> => {
    const results = await Promise.allSettled(inFlight.splice(0))
    inFlightBytes = 0
    const failed = results.find(x => x.status === 'rejected')
    if (failed) throw (failed as PromiseRejectedResult).reason
  }
  try {
    // The next records are read (and their CRCs checked) while these are written. What is
    // held of the stream at once: the writes in flight (settled once past BYTES_IN_FLIGHT, so
    // at most that and one record), the READ_AHEAD records asked for ahead, and the one in hand.
    // A small stream was read once, its records kept as checked (validateStream's keepBytes).
    const heldBytes = BYTES_IN_FLIGHT + (READ_AHEAD + 2) * maxRecordBytes(B)
    const records = summary.records ?? readAhead(readStream(file, { blockCrcs: true, heldBytes }), READ_AHEAD)
    for await (const r of records) {
      if ('header' in r || 'trailer' in r) continue
      // The blocks' CRCs came with the record (its check composed them): not computed again.
      // A zero record (blocks the sender trimmed or wrote as zeros) becomes a trim, as on the
      // sender: it reads the same, and its blocks' space is freed as the sender's was, where
      // writes of zeros would keep them as data in the log and the baseline (helper-74).
      const written = r.type === 'data' ? store.write(r.block * B, r.data, r.crcs) : store.discard(r.block * B, r.count * B)
      written.catch(() => undefined) // awaited by settle(); a failure before that is no unhandled rejection
      inFlight.push(written)
      inFlightBytes += r.type === 'data' ? r.data.length : 0
      if (inFlight.length >= WRITES_IN_FLIGHT || inFlightBytes >= BYTES_IN_FLIGHT) await settle()
      opts.onProgress?.(store.sizeBytes / 2 + Math.min((r.block + r.count) * B, store.sizeBytes) / 2, store.sizeBytes)
    }
  } finally {
    await settle()
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
    ? atStart
      ? await carryIdentity(store, baseIdentity!, startSeq, appliedSeq, atStart)
      : await carryIdentity(store, baseIdentity ?? BlockSetHash.empty(store.sizeBytes, B).toString(), baseSeq, appliedSeq)
    : await contentIdentity(store, appliedSeq)
  // The size first: an identity at another size is another identity, and the volume was
  // resized, not written (holdSize refuses a resize meanwhile; this stays as a guard).
  if (store.sizeBytes !== header.sizeBytes) {
    throw new LogdiskError('BUSY', `${store.dir} was resized to ${exactSize(store.sizeBytes)} while the stream of a ${exactSize(header.sizeBytes)} volume was applied; no snapshot was cut`)
  }
  if (identity !== header.snapshot.identity) {
    throw new LogdiskError('CORRUPT', `after applying the stream the current volume of ${store.dir} is not ${header.snapshot.name} (identity ${identity}, expected ${header.snapshot.identity}); was it written meanwhile? No snapshot was cut`)
  }
  // The snapshot keeps the time it was taken at its origin (as zfs receive keeps `creation`).
  const snapshot = await store.snapshot({ name: header.snapshot.name, frozen: header.snapshot.frozen, idPolicy: opts.idPolicy, createdMs: header.snapshot.timeMs })
  // A write that landed after the point checked above (a writer on the mounted store) is in
  // the cut: the snapshot's identity is carried across it (walked, for a c1 stream), and a
  // snapshot that is not the stream's is deleted again rather than kept under its name.
  // (Markers alone in between, a sync point say, change no block: nothing to check.)
  if (snapshot.seq !== appliedSeq + 1) {
    let cut: string | undefined = identity
    try {
      let written = false
      for await (const _ of store.changedBlocks(appliedSeq, snapshot.seq)) { written = true; break } // eslint-disable-line @typescript-eslint/no-unused-vars
      if (written) {
        cut = c2 ? await carryIdentity(store, identity, appliedSeq, snapshot.seq) : await contentIdentity(store, snapshot.seq)
        if (c2 && !store.pointHeld(appliedSeq)) cut = undefined // a version read there may be another point's
      }
    } catch (err) {
      await store.deleteSnapshot(snapshot.name).catch(() => undefined)
      throw err
    }
    if (cut !== header.snapshot.identity) {
      await store.deleteSnapshot(snapshot.name)
      throw new LogdiskError('CORRUPT', `the current volume of ${store.dir} was written while ${header.snapshot.name} was being cut (identity ${cut ?? 'unknown'}, expected ${header.snapshot.identity}); the snapshot was deleted again`)
    }
  }
  // Checked against the stream just now: the next incremental receive onto it carries it.
  if (c2) await rememberIdentities(store, new Map([[snapshot.seq, header.snapshot.identity]]), header.sizeBytes)
  clearApplying(store.dir)
  opts.onProgress?.(store.sizeBytes, store.sizeBytes)
  return { snapshot, from: header.from?.name ?? null, identity, dataBlocks: summary.trailer.dataBlocks, zeroBlocks: summary.trailer.zeroBlocks, rolledBack }
}
