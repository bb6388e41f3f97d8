import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError } from '../errors'
import { formatBytes } from '../size-text'
import { roomOf, type FileLayer } from './file-layer'
import { segmentFileName } from './format'
import { headroomOf, holdsIndex } from './headroom'

/**
 * Where a store's segment files live. The store asks its home for the directory of a volume
 * and for the volumes of each new segment; the pool (src/pool) is a home that spreads segments
 * over pool volumes and grows and shrinks (seed 002). Without a pool, a store keeps its
 * segments in one volume inside itself.
 *
 * Contract: `place` returns one volume, or as many as there are copies (mirroring), each with
 * room for a whole segment, or throws NO_SPACE naming what to do; `dirOf` is a pure lookup.
 */
export interface SegmentHome {
  /** Directory holding this store's segment files on `volume`. */
  dirOf (volume: string): string
  /** Every volume that may hold this store's segments (listed on open). */
  volumes (): string[]
  /**
   * Chooses the volumes of a new segment and counts it there at once (a drain that starts
   * meanwhile must see it); the store calls `vacated` if the segment cannot be created.
   * `ahead`: for a segment made before its roll needs it (next-segment.ts); a home may refuse
   * that while it needs every free segment's room (a drain), and the roll asks again.
   */
  place (segmentId: number, opts?: { ahead?: boolean }): Promise<string[]>
  /** Accounting: a segment now occupies these volumes (placed, found on open, relocated). */
  occupied (segmentId: number, volumes: string[]): void
  /** Accounting: a segment left these volumes. */
  vacated (segmentId: number, volumes: string[]): void
  /**
   * Whether volumes `place` chose a while ago would still be chosen for a new segment now:
   * as many as there are copies, none being drained or gone (a segment made ahead of its roll
   * is used only then: next-segment.ts).
   */
  stillSuits (volumes: string[]): boolean
}

export const LOCAL_VOLUME = 'local'

/** The pseudo-volume <store>/cache: archived segments fetched back (never a home of their own). */
export const CACHE_VOLUME = 'cache'

/** A store with this file in its directory keeps its segments in a pool (src/pool). */
export const POOL_FILE = 'pool.json'

/**
 * The default home: one volume, <store>/segments, without a capacity of its own. With `room`
 * (the layer asked for the filesystem's room, and the store's segment size) a new segment is
 * refused (NO_SPACE) when it would take the filesystem below its headroom: what the pool
 * leaves free on a filesystem (headroom.ts), and the index's reserve when the index shares
 * it. Without it the log filled the filesystem to its last byte, and the index beside it,
 * whose writes compaction needs before it frees anything, had no room left (helper-97 D3).
 */
export function localHome (storeDir: string, room?: { layer: FileLayer, segmentBytes: number }): SegmentHome {
  const dir = path.join(storeDir, 'segments')
  return {
    dirOf (volume) {
      if (volume !== LOCAL_VOLUME) throw new LogdiskError('NOT_FOUND', `segment volume ${volume} is not part of ${storeDir}`)
      return dir
    },
    volumes: () => [LOCAL_VOLUME],
    place: async (segmentId) => {
      if (room !== undefined) await assertRoomForSegment(storeDir, dir, segmentId, room.layer, room.segmentBytes)
      return [LOCAL_VOLUME]
    },
    occupied () {},
    vacated () {},
    stillSuits: volumes => volumes.length === 1 && volumes[0] === LOCAL_VOLUME
  }
}

/**
 * Throws NO_SPACE when a new segment of `segmentBytes` in `dir` would leave its filesystem less
 * free than its headroom. The segment before it (the current one, when this one is made ahead
 * of its roll) may still be filling: what it has not written yet is counted as taken (its file
 * takes room as it is written).
 */
async function assertRoomForSegment (storeDir: string, dir: string, segmentId: number, layer: FileLayer, segmentBytes: number): Promise<void> {
  const room = await roomOf(layer, dir)
  if (room === undefined) return // unknown: the writes say
  let filling = 0
  try {
    const st = fs.statSync(path.join(dir, segmentFileName(segmentId - 1)))
    filling = Math.max(0, segmentBytes - st.blocks * 512)
  } catch { /* none */ }
  const withIndex = holdsIndex(dir, path.join(storeDir, 'index'))
  const reserve = headroomOf(room.totalBytes, withIndex)
  if (room.freeBytes - filling - segmentBytes >= reserve) return
  throw new LogdiskError('NO_SPACE', `no space: the filesystem of ${dir} has ${formatBytes(room.freeBytes)} free${filling > 0 ? ` (${formatBytes(filling)} of it promised to the segment filling now)` : ''}, and a new ${formatBytes(segmentBytes)} segment would leave less than the ${formatBytes(reserve)} kept free there${withIndex ? ' for the store\'s index and other programs' : ' for other programs'}; compact the store, delete snapshots or free some space there`)
}
