import net from 'node:net'
import path from 'node:path'
import { LogdiskError, fromSystemError } from '../errors'
import { exactSize } from '../size-text'
import type { SnapshotRecord, Store } from '../store'
import { rememberIdentities } from './identity-cache'
import { setIdentitiesAt } from './set-identity'
import { STREAM_FORMAT, StreamWriter, maxRunBlocks, type StreamHeader, type StreamSink } from './stream-format'
import { imageChunks } from './image-chunks'
import { crc32cOfBlocks } from '../store/crc-combine'
import { writeFully, writePartialThenRename } from './partial-file'

/** Sending a snapshot, or the increment between two, as a stream (stream-format.ts) onto a sink. */

/** Batches of an incremental's blocks read at once (each about BATCH_BLOCKS, at most twice that). */
const READS_IN_FLIGHT = 16
/** Blocks of an incremental gathered into one read of their versions (Store.readListAt). */
const BATCH_BLOCKS = 256

export interface SendResult {
  snapshot: string
  from: string | null
  identity: string
  records: number
  dataBlocks: number
  zeroBlocks: number
  bytes: number
}

/**
 * Writes the stream of snapshot `name` (full), or of the blocks changed between `from` and
 * `name` (incremental: each changed block once, blocks now all zeros as zero records).
 * A full stream leaves out blocks that are zeros at the snapshot.
 */
export async function sendStream (
  store: Store, name: string, fromName: string | undefined, sink: StreamSink,
  opts: { onProgress?: (done: number, total: number) => void } = {}
): Promise<SendResult> {
  const snap = store.snapshotNamed(name)
  let from: SnapshotRecord | undefined
  if (fromName !== undefined) {
    from = store.snapshotNamed(fromName)
    if (from.seq >= snap.seq) throw new LogdiskError('BAD_ARGUMENT', `--from ${fromName} must be a snapshot older than ${name}`)
  }
  // A stream carries the volume's current size (its identities are computed at it): a
  // snapshot taken before a shrink is not sent cut to it (a filesystem on it would not mount).
  // One taken before a grow is sent at the grown size, zeros past its own end, as before.
  if (store.snapshotSize(snap) > store.sizeBytes) {
    throw new LogdiskError('BAD_ARGUMENT', `snapshot ${snap.name} is of the ${exactSize(store.snapshotSize(snap))} volume it was taken of, and ${store.dir} was shrunk to ${exactSize(store.sizeBytes)} since: a stream carries the current size, which would cut its image; export it (logdisk export) instead, or resize the volume back to send it`)
  }
  // c2 identities: from the store's identity file, carried from the older end, or walked once
  // and remembered, so the next incremental send from this snapshot costs only what changed.
  // Identities are of a geometry: one resized while they are computed is sent again.
  const sizeBytes = store.sizeBytes
  const [identity, fromIdentity] = await setIdentitiesAt(store, from ? [snap.seq, from.seq] : [snap.seq])
  if (store.sizeBytes !== sizeBytes) throw new LogdiskError('BUSY', `${store.dir} was resized while the identities of the stream were computed; send again`)
  const header: StreamHeader = {
    format: STREAM_FORMAT,
    sourceUuid: store.config.uuid,
    blockBytes: store.blockBytes,
    sizeBytes,
    snapshot: { name: snap.name, identity, timeMs: snap.timeMs, frozen: snap.frozen },
    from: from ? { name: from.name, identity: fromIdentity } : null,
    createdAt: new Date().toISOString()
  }
  const w = new StreamWriter(sink)
  await w.header(header)
  const B = store.blockBytes
  const maxRun = maxRunBlocks(B)
  const zero = Buffer.alloc(B)
  // A run of at most maxRun adjacent blocks that have a version in the range, split into
  // stretches of non-zero blocks (data records) and of zero blocks (zero records, which only
  // an incremental stream carries). `crcs`, when given, are the CRCs the blocks were checked
  // against as they were read: the record's CRC is composed from them.
  const emit = async (first: number, count: number, data: Buffer, crcs?: Uint32Array): Promise<void> => {
    const isZero = (k: number): boolean => data.compare(zero, 0, B, k * B, (k + 1) * B) === 0
    for (let i = 0; i < count;) {
      const zeros = isZero(i)
      let j = i + 1
      while (j < count && isZero(j) === zeros) j++
      if (!zeros) await w.data(first + i, data.subarray(i * B, j * B), B, crcs ? crc32cOfBlocks(crcs.subarray(i, j), B) : undefined)
      else if (from) await w.zero(first + i, j - i)
      i = j
    }
    opts.onProgress?.((first + count) * B, sizeBytes)
  }
  if (from) {
    // Incremental: the blocks changed in between, from the entries of that stretch of the log,
    // in runs, gathered in batches of about BATCH_BLOCKS read up to READS_IN_FLIGHT at a time
    // and emitted in order. A batch is read by where its versions lie in the log
    // (Store.readListAt): scattered single blocks, mostly written one after another, take a
    // few large reads, not one each (and never wait one for the other).
    const reads: Array<{ runs: number[], data: Promise<Buffer> }> = []
    const emitOldest = async (): Promise<void> => {
      const r = reads.shift()!
      const data = await r.data
      for (let i = 0, at = 0; i < r.runs.length; i += 2) {
        await emit(r.runs[i], r.runs[i + 1], data.subarray(at * B, (at + r.runs[i + 1]) * B))
        at += r.runs[i + 1]
      }
    }
    let runs: number[] = [] // [first, count] pairs of the batch being gathered
    let blocks: number[] = []
    const read = async (first: number, count: number): Promise<void> => {
      runs.push(first, count)
      for (let b = first; b < first + count; b++) blocks.push(b)
      if (blocks.length >= BATCH_BLOCKS) await readBatch()
    }
    const readBatch = async (): Promise<void> => {
      const data = store.readListAt(snap.seq, Float64Array.from(blocks))
      data.catch(() => undefined) // awaited in turn by emitOldest
      reads.push({ runs, data })
      runs = []
      blocks = []
      if (reads.length >= READS_IN_FLIGHT) await emitOldest()
    }
    let runStart = -1
    let runCount = 0
    try {
      for await (const block of store.changedBlocks(from.seq, snap.seq)) {
        if (runCount > 0 && block === runStart + runCount && runCount < maxRun) {
          runCount++
          continue
        }
        if (runCount > 0) await read(runStart, runCount)
        runStart = block
        runCount = 1
      }
      if (runCount > 0) await read(runStart, runCount)
      if (blocks.length > 0) await readBatch()
      while (reads.length > 0) await emitOldest()
    } finally {
      await Promise.allSettled(reads.map(r => r.data))
    }
  } else {
    // Full: the whole image in large chunks read ahead; the blocks written by the cut (where
    // is not -1) form the same runs as the changes since sequence 0 would. Their CRCs go along:
    // every block of a run is data read and checked (where >= 0) or trimmed (zeros, never in a
    // data record), so a data record's CRC is its blocks' composed.
    const run = Buffer.allocUnsafe(maxRun * B)
    const runCrcs = new Uint32Array(maxRun)
    let runStart = -1
    let runCount = 0
    for await (const c of imageChunks(store, snap.seq, 0, store.sizeBytes / B, `snapshot ${snap.name}`)) {
      for (let i = 0; i < c.n;) {
        if (c.where[i] === -1) { i++; continue }
        let j = i + 1
        while (j < c.n && c.where[j] !== -1) j++
        for (let s = i; s < j;) {
          const block = c.first + s
          let k: number
          if (runCount > 0 && block === runStart + runCount && runCount < maxRun) {
            k = Math.min(maxRun - runCount, j - s)
          } else {
            if (runCount > 0) await emit(runStart, runCount, run.subarray(0, runCount * B), runCrcs.subarray(0, runCount))
            k = Math.min(maxRun, j - s)
            runStart = block
            runCount = 0
          }
          c.data.copy(run, runCount * B, s * B, (s + k) * B)
          runCrcs.set(c.crcs.subarray(s, s + k), runCount)
          runCount += k
          s += k
        }
        i = j
      }
    }
    if (runCount > 0) await emit(runStart, runCount, run.subarray(0, runCount * B), runCrcs.subarray(0, runCount))
  }
  // Reads of an incremental are checked here (a full one was checked by imageChunks): a
  // snapshot deleted and compacted while the stream was made may have lent another point's data.
  for (const s of from ? [snap, from] : [snap]) {
    if (!store.pointHeld(s.seq)) throw new LogdiskError('NOT_FOUND', `snapshot ${s.name} was deleted while it was being sent; the stream is incomplete`)
  }
  const t = await w.trailer()
  // A store open for writing (the mount daemon's) keeps them in the store; a read-only command
  // leaves the store byte for byte as it was (CLI.md), so a send run directly keeps them in the
  // user's cache directory (identity-cache.ts), and the next incremental send from either end
  // carries them instead of walking every block.
  await rememberIdentities(store, new Map(from ? [[snap.seq, identity], [from.seq, fromIdentity]] : [[snap.seq, identity]]), sizeBytes)
  opts.onProgress?.(sizeBytes, sizeBytes)
  return { snapshot: snap.name, from: from?.name ?? null, identity, records: t.records, dataBlocks: t.dataBlocks, zeroBlocks: t.zeroBlocks, bytes: w.bytes }
}

/** A sink onto a new file: written under `<out>.partial`, fsynced, then renamed to `out`. */
export async function fileSink<T> (out: string, force: boolean, fn: (sink: StreamSink) => Promise<T>): Promise<T> {
  return writePartialThenRename(out, force, (fh, partial, writeback) => fn({
    write: async chunk => {
      try {
        await writeFully(fh, chunk, null, writeback)
      } catch (err) {
        throw fromSystemError(err, `write ${partial}`)
      }
    }
  }))
}

/**
 * A sink onto a unix socket that a client listens on (`send --out -` through the daemon: the
 * client copies what arrives to its standard output). Honours back-pressure.
 */
export async function socketSink<T> (socketPath: string, fn: (sink: StreamSink) => Promise<T>): Promise<T> {
  const conn = net.createConnection(socketPath)
  let failure: Error | undefined
  conn.on('error', err => { failure = err })
  await new Promise<void>((resolve, reject) => {
    conn.once('connect', resolve)
    conn.once('error', err => reject(new LogdiskError('IO', `cannot reach the receiving end at ${socketPath}: ${err.message}`)))
  })
  const closed = new Promise<void>(resolve => conn.once('close', () => resolve()))
  try {
    const result = await fn({
      write: chunk => new Promise<void>((resolve, reject) => {
        if (failure || conn.destroyed) return reject(new LogdiskError('IO', `the receiving end of the stream went away${failure ? ` (${failure.message})` : ''}`))
        if (conn.write(Buffer.from(chunk))) return resolve() // a copy: the socket may queue it past this call
        const onDrain = (): void => { conn.off('close', onClose); resolve() }
        const onClose = (): void => { conn.off('drain', onDrain); reject(new LogdiskError('IO', 'the receiving end of the stream went away')) }
        conn.once('drain', onDrain)
        conn.once('close', onClose)
      })
    })
    conn.end()
    await closed
    if (failure) throw new LogdiskError('IO', `sending the stream failed: ${failure.message}`)
    return result
  } catch (err) {
    conn.destroy()
    throw err
  }
}

/** sendStream onto a new file (`out`: temp name, fsync, rename) or a listening unix socket. */
export async function sendStreamTo (
  store: Store, name: string, fromName: string | undefined,
  to: { out?: string, socket?: string, force?: boolean },
  opts: { onProgress?: (done: number, total: number) => void } = {}
): Promise<SendResult & { out: string | null }> {
  const send = (sink: StreamSink): Promise<SendResult> => sendStream(store, name, fromName, sink, opts)
  if (to.socket) return { ...(await socketSink(to.socket, send)), out: null }
  if (!to.out || !path.isAbsolute(to.out)) throw new LogdiskError('BAD_ARGUMENT', 'send needs --out FILE or --out -')
  return { ...(await fileSink(to.out, to.force === true, send)), out: to.out }
}
