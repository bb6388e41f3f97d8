import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError, fromSystemError } from '../errors'
import { imageChunks } from './image-chunks'
import { writeFully, writePartialThenRename } from './partial-file'
import { Writeback } from './writeback'
import { exactSize } from '../size-text'
import type { Store } from '../store'

/**
 * Quick recovery volumes (003 cl. 1, F8): a block-level copy of a snapshot to a plain image
 * file or a block device, made while the store stays in use (the snapshot is a stable cut).
 */

/**
 * A stretch of the target: `data` goes at byte `offset` of the target. `zeros`, if given,
 * marks (1) blocks of `data` known to be zeros, which a file copy then leaves as holes without
 * comparing their bytes (most of a sparse volume's blocks were never written).
 */
export interface ImagePiece {
  offset: number
  data: Buffer
  zeros?: Uint8Array
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
  // Fault injection: fail once half the image is written, or before completing a smaller copy.
  const inject = opts.faultLabel !== undefined && opts.faults?.has(opts.faultLabel) === true
  const fault = (): LogdiskError => new LogdiskError('IO', `injected fault: the copy failed midway (LOGDISK_FAULTS=${opts.faultLabel})`)
  const copy = async (fh: fs.promises.FileHandle, writeback: Writeback): Promise<number> => {
    const zero = Buffer.alloc(B)
    let written = 0
    const put = async (data: Buffer, offset: number): Promise<void> => {
      await writeFully(fh, data, offset, writeback)
      written += data.length
    }
    for await (const { offset, data, zeros } of pieces) {
      if (offset + data.length > sizeBytes) throw new LogdiskError('IO', `internal: a piece at ${offset} runs past the image's ${sizeBytes} bytes`)
      if (device) {
        await put(data, offset)
      } else {
        // Only non-zero blocks: zeros stay holes. Adjacent non-zero blocks go in one write.
        const n = Math.ceil(data.length / B)
        const isZero = (k: number): boolean => {
          if (zeros?.[k] === 1) return true
          const len = Math.min(B, data.length - k * B)
          return data.compare(zero, 0, len, k * B, k * B + len) === 0
        }
        for (let i = 0; i < n;) {
          if (isZero(i)) { i++; continue }
          let j = i + 1
          while (j < n && !isZero(j)) j++
          await put(data.subarray(i * B, Math.min(j * B, data.length)), offset + i * B)
          i = j
        }
      }
      opts.onProgress?.(offset + data.length, sizeBytes)
      if (inject && offset + data.length >= sizeBytes / 2) throw fault()
    }
    if (inject) throw fault()
    return written
  }
  let written: number
  if (device) {
    let fh: fs.promises.FileHandle
    try {
      fh = await fs.promises.open(out, fs.constants.O_RDWR | fs.constants.O_EXCL)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EBUSY') throw new LogdiskError('BUSY', `${out} is in use (mounted?); unmount it first`, err)
      throw fromSystemError(err, `open ${out}`)
    }
    const writeback = new Writeback(fh, out)
    try {
      written = await copy(fh, writeback)
      await writeback.settle()
      await fh.sync()
    } catch (err) {
      throw err instanceof LogdiskError ? err : fromSystemError(err, `write ${out}`)
    } finally {
      await writeback.settle().catch(() => undefined)
      await fh.close().catch(() => undefined)
    }
  } else {
    written = await writePartialThenRename(out, true, async (fh, partial, writeback) => {
      await fh.truncate(sizeBytes).catch(err => { throw fromSystemError(err, `extend ${partial}`) })
      return copy(fh, writeback)
    })
  }
  opts.onProgress?.(sizeBytes, sizeBytes)
  return { out, device, sizeBytes, writtenBytes: written }
}

/**
 * Blocks [first, first+count) of a snapshot's image, in large pieces read ahead of the writer
 * (imageChunks); offsets from `first`. Fails at the end if the snapshot was deleted and
 * compacted meanwhile (a piece may then hold another point's data).
 */
export async function * snapshotPieces (store: Store, name: string, first: number, count: number): AsyncGenerator<ImagePiece> {
  yield * pointPieces(store, store.snapshotNamed(name).seq, `snapshot ${name}`, first, count)
}

/** Blocks [first, first+count) of the image at cut `seq` (`what` names it in errors). */
export async function * pointPieces (store: Store, seq: number, what: string, first: number, count: number): AsyncGenerator<ImagePiece> {
  const B = store.blockBytes
  for await (const c of imageChunks(store, seq, first, count, what)) yield { offset: (c.first - first) * B, data: c.data, zeros: c.zeros }
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
  const size = store.snapshotSize(snap) // the volume's size at the cut, whatever it is now
  const blocks = size / store.blockBytes
  const written = await writeImage(out, size, snapshotPieces(store, name, 0, blocks), {
    blockBytes: store.blockBytes, force: opts.force, faults: opts.faults, faultLabel: 'export-copy', onProgress: opts.onProgress
  })
  return { snapshot: snap.name, seq: snap.seq, ...written }
}
