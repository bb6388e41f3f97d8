import path from 'node:path'
import { unpack } from 'msgpackr'
import type { BlockMap } from './block-map'
import type { FileLayer } from './file-layer'
import { ENTRY_HEADER_BYTES, BLOCK_CRC_BYTES, EntryKind, SEGMENT_HEADER_BYTES, parseSegmentFileName, segmentFileName } from './format'
import { IndexBatch, type IndexDb } from './index-db'
import type { Logger } from './logger'
import { scanSegment, type ScannedEntry } from './scanner'
import { Segment, type SegmentGeometry } from './segment'

export interface RecoveryReport {
  /** Entries read from the log past the index checkpoint and applied. */
  replayedEntries: number
  /** The index was missing or behind what the log allows and was rebuilt from the whole log. */
  rebuiltIndex: boolean
  /** Set when a torn or damaged tail was cut: where, why, and where its bytes were kept. */
  cut?: { segment: number, offset: number, bytes: number, reason: string, savedTo: string }
  /** Segment files after a cut, moved aside (never deleted). */
  orphanedSegments: string[]
}

export interface Recovered {
  segments: number[]
  current: Segment
  seq: number
  report: RecoveryReport
}

/** Commits replayed history every this many blocks so a full rebuild runs in bounded memory. */
const REPLAY_COMMIT_BLOCKS = 262144

/**
 * Brings the index up to date with the log on open (004 cl. 10: the index can be rebuilt by
 * scanning the log). Replays entries past the checkpoint into `map` and the index; cuts a torn
 * tail after keeping its bytes in lost+found/, so a torn write is never served and nothing is
 * destroyed.
 */
export async function recover (
  layer: FileLayer, storeDir: string, segmentDir: string, geometry: SegmentGeometry,
  index: IndexDb, map: BlockMap, log: Logger
): Promise<Recovered> {
  const ids = (await layer.list(segmentDir)).map(parseSegmentFileName).filter((id): id is number => id !== undefined).sort((a, b) => a - b)
  const report: RecoveryReport = { replayedEntries: 0, rebuiltIndex: false, orphanedSegments: [] }
  let checkpoint = await index.checkpoint()
  const cpSegment = checkpoint ? Math.floor(checkpoint.position / geometry.segmentBytes) : -1
  if (checkpoint && checkpoint.seq > 0 && !(await logReaches(layer, segmentDir, ids, cpSegment, checkpoint.position % geometry.segmentBytes))) {
    log.warn({ checkpoint }, 'the index is ahead of the log (segments missing or shortened); rebuilding the index from the log')
    checkpoint = undefined
  }
  if (!checkpoint) {
    await index.clear()
    report.rebuiltIndex = ids.length > 0
  } else {
    await index.loadNewest(map)
  }

  let seq = checkpoint?.seq ?? 0
  const startSegment = checkpoint && checkpoint.seq > 0 ? cpSegment : (ids[0] ?? 0)
  let startOffset = checkpoint && checkpoint.seq > 0 ? checkpoint.position % geometry.segmentBytes : SEGMENT_HEADER_BYTES
  if (startOffset < SEGMENT_HEADER_BYTES) startOffset = SEGMENT_HEADER_BYTES

  let batch = new IndexBatch()
  const scanned: number[] = []
  let current: Segment | undefined
  let stop = false

  for (const id of ids.filter(i => i >= startSegment)) {
    if (stop || (scanned.length > 0 && id !== scanned[scanned.length - 1] + 1)) {
      report.orphanedSegments.push(await moveAside(layer, storeDir, segmentDir, segmentFileName(id)))
      continue
    }
    let segment: Segment
    try {
      segment = await Segment.open(layer, segmentDir, id, geometry)
    } catch (err) {
      // A segment whose header never became durable is a torn roll: keep it aside, stop here.
      log.warn({ segment: id, err: (err as Error).message }, 'segment header unreadable; treating it as a torn tail')
      report.orphanedSegments.push(await moveAside(layer, storeDir, segmentDir, segmentFileName(id)))
      stop = true
      continue
    }
    scanned.push(id)
    if (current) await current.close()
    current = segment
    let suspect: ScannedEntry | undefined // an entry with bad block data: torn if it is the last one
    const offset = id === startSegment ? startOffset : SEGMENT_HEADER_BYTES
    for await (const item of scanSegment(segment.handle, offset, geometry.blockBytes, true)) {
      if (item.type === 'entry' && item.header.seq !== seq + 1 + (suspect ? 1 : 0)) {
        await cut(item.offset, `sequence gap (expected ${seq + 1}, found ${item.header.seq})`)
        break
      }
      if (item.type === 'entry') {
        if (suspect) { apply(suspect); suspect = undefined }
        if (item.badBlocks.length > 0) suspect = item
        else apply(item)
        continue
      }
      // End of the segment's valid entries.
      if (suspect) {
        await cut(suspect.offset, `block checksum mismatch in the last entry (seq ${suspect.header.seq})`)
      } else if (item.torn) {
        await cut(item.offset, item.torn)
      } else {
        segment.tail = item.offset
      }
    }
    if (batch.history.length / 4 >= REPLAY_COMMIT_BLOCKS) await commit(segment)

    async function cut (offset: number, reason: string): Promise<void> {
      const bytes = (await segment.handle.size()) - offset
      const savedTo = await saveTail(layer, storeDir, segment, offset, bytes)
      await segment.handle.truncate(offset)
      await segment.handle.datasync()
      segment.tail = offset
      report.cut = { segment: id, offset, bytes, reason, savedTo }
      log.warn(report.cut, 'cut a torn or damaged log tail; its bytes were kept aside')
      stop = true
    }
  }

  function apply (entry: ScannedEntry): void {
    const h = entry.header
    seq = h.seq
    report.replayedEntries++
    const position = scanned[scanned.length - 1] * geometry.segmentBytes + entry.offset
    if (h.kind === EntryKind.write) {
      const dataStart = position + ENTRY_HEADER_BYTES + h.count * BLOCK_CRC_BYTES
      for (let i = 0; i < h.count; i++) {
        const crc = entry.table.readUInt32LE(ENTRY_HEADER_BYTES + i * BLOCK_CRC_BYTES)
        const at = dataStart + i * geometry.blockBytes
        map.set(h.block + i, at, crc)
        batch.addBlock(h.block + i, h.seq, at, crc)
      }
      if (entry.badBlocks.length > 0) log.error({ seq: h.seq, position, badBlocks: entry.badBlocks }, 'damaged blocks in the log; reads of them will fail with EIO')
    } else {
      batch.markers.set(h.seq, { kind: h.kind, position, timeMs: h.timeMs, payload: unpack(entry.payload!) })
    }
  }

  async function commit (segment: Segment): Promise<void> {
    await segment.handle.datasync() // index entries may only point at durable log bytes
    await index.commit(batch, { seq, position: segment.id * geometry.segmentBytes + segment.tail, timeMs: Date.now() })
    batch = new IndexBatch()
  }

  if (!current) {
    const id = ids.length > 0 ? ids[ids.length - 1] + 1 : 0
    current = await Segment.create(layer, segmentDir, id, geometry)
    scanned.push(id)
  }
  for (const id of scanned) batch.segments.set(id, { state: id === current.id ? 'current' : 'active' })
  await commit(current)
  return { segments: scanned, current, seq, report }
}

/** Whether the segment holding the checkpoint exists and is at least that long. */
async function logReaches (layer: FileLayer, segmentDir: string, ids: number[], segment: number, offset: number): Promise<boolean> {
  if (!ids.includes(segment)) return false
  const handle = await layer.open(path.join(segmentDir, segmentFileName(segment)), false)
  try {
    return (await handle.size()) >= offset
  } finally {
    await handle.close()
  }
}

/** Copies the bytes of a cut tail to lost+found/ before the segment is truncated. */
async function saveTail (layer: FileLayer, storeDir: string, segment: Segment, offset: number, bytes: number): Promise<string> {
  const dir = path.join(storeDir, 'lost+found')
  await layer.mkdirp(dir)
  const file = path.join(dir, `${path.basename(segment.file)}@${offset}.bin`)
  const buf = Buffer.alloc(Math.max(0, bytes))
  if (bytes > 0) await segment.handle.read(buf, 0, bytes, offset)
  const out = await layer.open(file, true)
  try {
    await out.truncate(0)
    await out.writev([buf], 0)
    await out.datasync()
  } finally {
    await out.close()
  }
  await layer.syncDir(dir)
  return file
}

async function moveAside (layer: FileLayer, storeDir: string, segmentDir: string, name: string): Promise<string> {
  const dir = path.join(storeDir, 'lost+found')
  await layer.mkdirp(dir)
  const to = path.join(dir, name)
  await layer.rename(path.join(segmentDir, name), to)
  return to
}
