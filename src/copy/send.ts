import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { LogdiskError, fromSystemError } from '../errors'
import type { SnapshotRecord, Store } from '../store'
import { contentIdentity } from './content-identity'
import { STREAM_FORMAT, StreamWriter, maxRunBlocks, type StreamHeader, type StreamSink } from './stream-format'
import { syncDir } from './sync-dir'

/** Sending a snapshot, or the increment between two, as a stream (stream-format.ts) onto a sink. */

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
  const identity = await contentIdentity(store, snap.seq)
  const header: StreamHeader = {
    format: STREAM_FORMAT,
    sourceUuid: store.config.uuid,
    blockBytes: store.blockBytes,
    sizeBytes: store.sizeBytes,
    snapshot: { name: snap.name, identity, timeMs: snap.timeMs, frozen: snap.frozen },
    from: from ? { name: from.name, identity: await contentIdentity(store, from.seq) } : null,
    createdAt: new Date().toISOString()
  }
  const w = new StreamWriter(sink)
  await w.header(header)
  const B = store.blockBytes
  const maxRun = maxRunBlocks(B)
  const zero = Buffer.alloc(B)
  const emit = async (first: number, count: number): Promise<void> => {
    const data = await store.readSnapshot(snap.name, first * B, count * B)
    // Split the run into stretches of non-zero blocks (data) and of zero blocks.
    for (let i = 0; i < count;) {
      const isZero = data.subarray(i * B, (i + 1) * B).equals(zero)
      let j = i + 1
      while (j < count && data.subarray(j * B, (j + 1) * B).equals(zero) === isZero) j++
      if (!isZero) await w.data(first + i, data.subarray(i * B, j * B), B)
      else if (from) await w.zero(first + i, j - i)
      i = j
    }
    opts.onProgress?.((first + count) * B, store.sizeBytes)
  }
  let runStart = -1
  let runCount = 0
  for await (const block of store.changedBlocks(from ? from.seq : 0, snap.seq)) {
    if (runCount > 0 && block === runStart + runCount && runCount < maxRun) {
      runCount++
      continue
    }
    if (runCount > 0) await emit(runStart, runCount)
    runStart = block
    runCount = 1
  }
  if (runCount > 0) await emit(runStart, runCount)
  const t = await w.trailer()
  opts.onProgress?.(store.sizeBytes, store.sizeBytes)
  return { snapshot: snap.name, from: from?.name ?? null, identity, records: t.records, dataBlocks: t.dataBlocks, zeroBlocks: t.zeroBlocks, bytes: w.bytes }
}

/** A sink onto a new file: written under `<out>.partial`, fsynced, then renamed to `out`. */
export async function fileSink<T> (out: string, force: boolean, fn: (sink: StreamSink) => Promise<T>): Promise<T> {
  if (!force && fs.existsSync(out)) throw new LogdiskError('BAD_ARGUMENT', `${out} exists; give --force to overwrite it`)
  const tmp = `${out}.partial`
  let fh: fs.promises.FileHandle
  try {
    fh = await fs.promises.open(tmp, 'w', 0o644)
  } catch (err) {
    throw fromSystemError(err, `create ${tmp}`)
  }
  let result: T
  try {
    result = await fn({
      write: async chunk => {
        try {
          await fh.write(chunk)
        } catch (err) {
          throw fromSystemError(err, `write ${tmp}`)
        }
      }
    })
    await fh.sync()
    await fh.close()
  } catch (err) {
    await fh.close().catch(() => undefined)
    await fs.promises.rm(tmp, { force: true })
    throw err
  }
  await fs.promises.rename(tmp, out)
  await syncDir(path.dirname(out))
  return result
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
        if (conn.write(chunk)) return resolve()
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
