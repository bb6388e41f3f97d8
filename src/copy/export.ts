import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError, fromSystemError } from '../errors'
import { exactSize } from '../size-text'
import { syncDir } from './sync-dir'
import type { Store } from '../store'

/**
 * Quick recovery volumes (003 cl. 1, F8): a block-level copy of a snapshot to a plain image
 * file or a block device, made while the store stays in use (the snapshot is a stable cut).
 */

/** A stretch of the target: `data` goes at byte `offset` of the target. */
export interface ImagePiece {
  offset: number
  data: Buffer
}

export interface WriteImageOptions {
  blockBytes: number
  /** Overwrite an existing regular file. */
  force?: boolean
  /** Fault injection for tests: the label in `faults` that makes the copy fail midway. */
  faults?: ReadonlySet<string>
  faultLabel?: string
  onProgress?: (done: number, total: number) => void
}

export interface WrittenImage {
  out: string
  device: boolean
  /** Length of the image (the target file's size). */
  sizeBytes: number
  /** Bytes actually written (a file skips zero blocks: they stay holes). */
  writtenBytes: number
}

const CHUNK_BYTES = 1024 * 1024

/** Size in bytes of a block device, from sysfs; undefined when it cannot tell. */
function blockDeviceBytes (rdev: number): number | undefined {
  const major = ((rdev >>> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff)
  const minor = (rdev & 0xff) | ((rdev >>> 12) & 0xfff00)
  try {
    return Number(fs.readFileSync(`/sys/dev/block/${major}:${minor}/size`, 'utf8').trim()) * 512
  } catch {
    return undefined
  }
}

/**
 * Writes an image of `sizeBytes` from `pieces` (in increasing offset order) to `out`.
 *
 * A regular file (new, or existing with `force`) is written under `<out>.partial` as a sparse
 * file: its size is set first and only non-zero blocks are written, so blocks that are zeros or
 * were never written stay holes; it is fsynced, renamed to `out`, and the directory fsynced.
 * `out` therefore never holds a half-written image.
 *
 * A block device is written in place, every piece including its zero blocks, opened with
 * O_EXCL (refused while mounted or in use), and fsynced; it must hold `sizeBytes`.
 */
export async function writeImage (out: string, sizeBytes: number, pieces: AsyncIterable<ImagePiece>, opts: WriteImageOptions): Promise<WrittenImage> {
  const B = opts.blockBytes
  let stat: fs.Stats | undefined
  try {
    stat = await fs.promises.stat(out)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw fromSystemError(err, `stat ${out}`)
  }
  const device = stat?.isBlockDevice() ?? false
  if (stat && !device) {
    if (!stat.isFile()) throw new LogdiskError('BAD_ARGUMENT', `${out} is not a regular file or a block device`)
    if (!opts.force) throw new LogdiskError('BAD_ARGUMENT', `${out} exists; give --force to overwrite it`)
  }
  if (device) {
    const bytes = blockDeviceBytes(stat!.rdev)
    if (bytes !== undefined && bytes < sizeBytes) {
      throw new LogdiskError('BAD_ARGUMENT', `${out} holds ${exactSize(bytes)}; the image needs ${exactSize(sizeBytes)}`)
    }
  }
  const target = device ? out : `${out}.partial`
  let fh: fs.promises.FileHandle
  try {
    fh = device
      ? await fs.promises.open(out, fs.constants.O_RDWR | fs.constants.O_EXCL)
      : await fs.promises.open(target, 'w', 0o644)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EBUSY') throw new LogdiskError('BUSY', `${out} is in use (mounted?); unmount it first`, err)
    throw fromSystemError(err, `open ${target}`)
  }
  const zero = Buffer.alloc(B)
  let written = 0
  // Fault injection: fail once half the image is written, or before completing a smaller copy.
  const inject = opts.faultLabel !== undefined && opts.faults?.has(opts.faultLabel) === true
  const fault = (): LogdiskError => new LogdiskError('IO', `injected fault: the copy failed midway (LOGDISK_FAULTS=${opts.faultLabel})`)
  const put = async (data: Buffer, offset: number): Promise<void> => {
    for (let done = 0; done < data.length;) {
      const { bytesWritten } = await fh.write(data, done, data.length - done, offset + done)
      done += bytesWritten
    }
    written += data.length
  }
  try {
    if (!device) await fh.truncate(sizeBytes)
    for await (const { offset, data } of pieces) {
      if (offset + data.length > sizeBytes) throw new LogdiskError('IO', `internal: a piece at ${offset} runs past the image's ${sizeBytes} bytes`)
      if (device) {
        await put(data, offset)
      } else {
        // Only non-zero blocks: zeros stay holes. Adjacent non-zero blocks go in one write.
        const n = Math.ceil(data.length / B)
        for (let i = 0; i < n;) {
          const block = (k: number): Buffer => data.subarray(k * B, Math.min((k + 1) * B, data.length))
          if (block(i).equals(zero.subarray(0, block(i).length))) { i++; continue }
          let j = i + 1
          while (j < n && !block(j).equals(zero.subarray(0, block(j).length))) j++
          await put(data.subarray(i * B, Math.min(j * B, data.length)), offset + i * B)
          i = j
        }
      }
      opts.onProgress?.(offset + data.length, sizeBytes)
      if (inject && offset + data.length >= sizeBytes / 2) throw fault()
    }
    if (inject) throw fault()
    await fh.sync()
    await fh.close()
  } catch (err) {
    await fh.close().catch(() => undefined)
    if (!device) await fs.promises.rm(target, { force: true })
    throw err instanceof LogdiskError ? err : fromSystemError(err, `write ${target}`)
  }
  if (!device) {
    await fs.promises.rename(target, out)
    await syncDir(path.dirname(out))
  }
  opts.onProgress?.(sizeBytes, sizeBytes)
  return { out, device, sizeBytes, writtenBytes: written }
}

/** Blocks [first, first+count) of a snapshot's image, in 1 MiB pieces; offsets from `first`. */
export async function * snapshotPieces (store: Store, name: string, first: number, count: number): AsyncGenerator<ImagePiece> {
  const B = store.blockBytes
  const per = Math.max(1, Math.floor(CHUNK_BYTES / B))
  for (let b = first; b < first + count; b += per) {
    const n = Math.min(per, first + count - b)
    yield { offset: (b - first) * B, data: await store.readSnapshot(name, b * B, n * B) }
  }
}

/**
 * Only the blocks of [first, first+count) written in (fromSeq, snapshot's cut], as pieces of
 * adjacent blocks (offsets from `first`); `ranges` receives each piece as [block, count].
 */
export async function * changedPieces (
  store: Store, name: string, fromSeq: number, first: number, count: number, ranges: Array<[number, number]>
): AsyncGenerator<ImagePiece> {
  const snap = store.snapshotNamed(name)
  const B = store.blockBytes
  const per = Math.max(1, Math.floor(CHUNK_BYTES / B))
  let start = -1
  let n = 0
  const piece = async (): Promise<ImagePiece> => {
    const last = ranges[ranges.length - 1]
    if (last && last[0] + last[1] === start) last[1] += n
    else ranges.push([start, n])
    return { offset: (start - first) * B, data: await store.readSnapshot(name, start * B, n * B) }
  }
  for await (const block of store.changedBlocks(fromSeq, snap.seq)) {
    if (block < first) continue
    if (block >= first + count) break
    if (n > 0 && block === start + n && n < per) { n++; continue }
    if (n > 0) yield await piece()
    start = block
    n = 1
  }
  if (n > 0) yield await piece()
}

export interface ExportResult extends WrittenImage {
  snapshot: string
  seq: number
}

/**
 * Exports snapshot `name` as a full block-level image (a quick recovery volume). Works while
 * the store is in use: the snapshot's cut does not move. Deleting the snapshot afterwards is
 * the caller's step, taken only once this resolves (the copy is complete and fsynced).
 */
export async function exportSnapshot (
  store: Store, name: string, out: string,
  opts: { force?: boolean, faults?: ReadonlySet<string>, onProgress?: (done: number, total: number) => void } = {}
): Promise<ExportResult> {
  if (!path.isAbsolute(out)) throw new LogdiskError('BAD_ARGUMENT', `export needs an absolute --out path (got ${out})`)
  const snap = store.snapshotNamed(name)
  const blocks = store.sizeBytes / store.blockBytes
  const written = await writeImage(out, store.sizeBytes, snapshotPieces(store, name, 0, blocks), {
    blockBytes: store.blockBytes, force: opts.force, faults: opts.faults, faultLabel: 'export-copy', onProgress: opts.onProgress
  })
  return { snapshot: snap.name, seq: snap.seq, ...written }
}
