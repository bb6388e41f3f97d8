import type { StoreParts } from './parts'

export interface ArchiveOptions {
  /** Also archive active segments sealed at least this long ago. */
  olderThanMs?: number
  /** Keep at most this many local segments (the oldest active ones beyond it are archived). */
  workingSet?: number
}

export interface ArchiveReport { archived: number, removedLocal: number, bytes: number }

/**
 * The archive pass (004 cl. 14-18), run under the maintenance lock: archives sealed segments
 * to backing storage: inactive ones (nothing live), active ones sealed longer than
 * `olderThanMs`, and the oldest active ones past a working set of `workingSet` local
 * segments. Each is put (atomic, verified) before its local copy goes; reads fetch it back on
 * demand (reader.ts). Appends go on meanwhile.
 */
export async function archivePass (p: StoreParts, opts: ArchiveOptions, onProgress?: (done: number, total: number) => void): Promise<ArchiveReport> {
  const { lifeCycle, segments, log } = p
  const fence = await lifeCycle.takeFence() // what is archived is sealed and durable
  await log.lock.run(() => log.syncAll())
  lifeCycle.markInactive(fence)
  const sealed = segments.ids.filter(id => fence.mayTouchSegment(id) && segments.stateOf(id) !== 'archived')
  const local = sealed.filter(id => segments.stateOf(id) === 'active')
  const chosen = new Set(sealed.filter(id => segments.stateOf(id) === 'inactive'))
  if (opts.olderThanMs && opts.olderThanMs > 0) {
    for (const id of local) {
      const st = await sealedAtMs(p, id)
      if (st !== undefined && p.now() - st >= opts.olderThanMs) chosen.add(id)
    }
  }
  if (opts.workingSet && opts.workingSet > 0) {
    const excess = local.length + 1 - opts.workingSet
    for (const id of local.slice(0, Math.max(0, excess))) chosen.add(id)
  }
  const out = { archived: 0, removedLocal: 0, bytes: 0 }
  let done = 0
  for (const id of [...chosen].sort((a, b) => a - b)) {
    p.state.assertNotClosing()
    onProgress?.(done++, chosen.size)
    out.bytes += await lifeCycle.ensureArchived(id)
    out.archived++
    // The local copy goes only once the index says where the segment is now.
    const volumes = segments.volumesOf(id) ?? []
    segments.setState(id, 'archived')
    segments.forgetVolumes(id)
    segments.record(id)
    await p.index.commitDurably()
    p.reader.forgetHandle(id)
    await lifeCycle.removeEveryCopy(id)
    p.home.vacated(id, volumes)
    out.removedLocal++
  }
  onProgress?.(chosen.size, chosen.size)
  p.logger.info(out, 'archived')
  return out
}

/** When a segment was sealed: the time of its last entry. */
async function sealedAtMs (p: StoreParts, id: number): Promise<number | undefined> {
  let last: number | undefined
  for await (const [, e] of p.db.entries(1, p.log.seq)) {
    const seg = Math.floor(e.position / p.config.segmentBytes)
    if (seg === id) last = e.timeMs
    else if (seg > id) break
  }
  return last
}
