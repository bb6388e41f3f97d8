import { isLogdiskError } from '../errors'
import { BASELINE_BASE, baselineFiles, readBaselineIndex, writeBaselineIndex } from './baseline'
import { tableBytes } from './entry'
import { readBaselineOrigins, writeBaselineOrigins, type BaselineOrigin } from './baseline-origins'
import { EntryKind, TRIMMED } from './format'
import { punchHoles } from './file-layer'
import type { StoreParts } from './parts'

/**
 * The baseline merge (000 cl. 8), run under the maintenance lock before a compaction: every
 * block's version at the cut (the oldest kept snapshot, else now, and never inside the
 * history window) is written into the block-ordered baseline image, and the index then
 * points at the baseline, so the log entries it covered become unreferenced. The slots of
 * blocks trimmed at the cut become holes. Every image reads the same before and after.
 * Returns how many blocks moved in, the cut, and how many trimmed slots were cleared.
 */
export async function mergeIntoBaseline (p: StoreParts, onProgress?: (done: number, total: number) => void): Promise<{ blocks: number, cutSeq: number, trimmedSlots: number }> {
  const { lifeCycle, history, db, layer, index, map } = p
  const fence = await lifeCycle.takeFence()
  // Up to the oldest snapshot, and not into the history window: a slot overwritten here
  // held a version that no protected point may still read.
  const cutSeq = Math.min(p.snapshotTable.list()[0]?.seq ?? fence.seq, fence.seq, await history.windowStart(fence))
  const B = p.config.blockBytes
  const existing = await readBaselineIndex(layer, p.dir, p.config.uuid)
  const inBaseline = new Map<number, { seq: number, crc: number }>()
  for (const b of existing?.blocks ?? []) inBaseline.set(b.block, b)
  // Where the baseline's versions were in the log (baseline-origins.ts), kept for replicas.
  const origins = new Map<number, BaselineOrigin>()
  // Optional: one that cannot be read is rewritten with what this merge knows.
  for (const o of await readBaselineOrigins(layer, p.dir, p.config.uuid).catch(() => [])) origins.set(o.block, o)
  // The version of every block visible at the cut, from one pass over the index.
  const visible: Array<{ block: number, seq: number, crc: number, position: number }> = []
  // Blocks trimmed at the cut whose baseline slot still holds older data: the slot is cleared.
  let trimmed: Array<{ block: number, seq: number }> = []
  // Blocks trimmed since the last merge that completed (after its cut) whose slot baseline.idx
  // does not list: an earlier merge unlisted the slot to clear it and the process died before
  // the punch, so it may still hold the bytes the trim hid. Nothing reads an unlisted slot:
  // punched again (a hole punched over a hole costs nothing). Without this they stayed for good.
  const unlistedTrimmed: number[] = []
  const lastCut = existing?.cutSeq ?? Infinity
  let block = -1
  let best: { seq: number, crc: number, position: number } | undefined
  // A trimmed block stays a trim entry in the log: there is no data to merge. But the slot of
  // an older merge keeps the bytes the trim hid, for good: no merge chose the block again, and
  // the disk space of deleted, fstrim'd files never came back (a hostile test, helper-72).
  const flushBest = (): void => {
    if (best && best.position >= 0 && best.position < BASELINE_BASE) visible.push({ block, ...best })
    else if (best?.position === TRIMMED && (inBaseline.get(block)?.seq ?? Infinity) < best.seq) trimmed.push({ block, seq: best.seq })
    else if (best?.position === TRIMMED && !inBaseline.has(block) && best.seq > lastCut) unlistedTrimmed.push(block)
  }
  for await (const rows of db.historyBatches(0, undefined, p.opts.historyHoldVersions)) {
    for (let i = 0; i < rows.length; i += 4) {
      if (rows[i] !== block) { flushBest(); block = rows[i]; best = undefined }
      if (rows[i + 1] <= cutSeq) best = { seq: rows[i + 1], crc: rows[i + 3], position: rows[i + 2] }
    }
  }
  flushBest()
  const publish = (cut: number): Promise<void> => writeBaselineIndex(layer, p.dir, p.config.uuid, {
    cutSeq: cut,
    blocks: [...inBaseline].sort((a, b) => a[0] - b[0]).map(([b, v]) => ({ block: b, seq: v.seq, crc: v.crc }))
  })

  // A slot about to be overwritten holds an older version that history may still read
  // (restores with backing storage keep every point): that version is read from its own
  // log copy (or the archive) from now on, or, where no copy is left, given up under a
  // raised horizon. Then the baseline index stops vouching for the slot, so that a crash
  // while it is rewritten never serves the half-written slot as the old version.
  let overwrite = [...visible.filter(v => inBaseline.has(v.block)), ...trimmed]
  if (overwrite.length > 0) {
    // Decided first, staged in the shared batch only once the horizon is in the log: a
    // failure in between must not leave history deletes for the next checkpoint to commit.
    const repoint: Array<[number, number, number, number]> = []
    let drop: Array<{ block: number, seq: number, horizon: number }> = []
    for (const v of overwrite) {
      const old = inBaseline.get(v.block)!
      const at = await db.versionAt(v.block, old.seq)
      if (at?.seq !== old.seq || at.position < BASELINE_BASE) continue // nothing reads the slot
      const original = await originalPosition(p, v.block, old.seq)
      if (original !== undefined) {
        repoint.push([v.block, old.seq, original, old.crc])
      } else {
        // Points before the new version read the old one: they are given up.
        drop.push({ block: v.block, seq: old.seq, horizon: v.seq - 1 })
      }
    }
    try {
      await history.raiseHorizon(drop.reduce((h, d) => Math.max(h, d.horizon), history.horizon))
    } catch (err) {
      // The marker goes into the maintenance reserve (pass-fence.ts), so a full pool does not
      // refuse it. Should even the reserve be used up, the merge does the part of its work
      // that needs no new marker instead of failing: a block whose slot holds a version only
      // points after the current horizon still read (and no log copy of it is left) keeps
      // that version in its slot, and its version at the cut stays in the log for a later
      // merge. Every other block merges as usual, so the log copies of what it merges can
      // still be freed by the compaction that follows (which has the same fallback).
      if (!isLogdiskError(err, 'NO_SPACE')) throw err
      const keep = new Set(drop.filter(d => d.horizon > history.horizon).map(d => d.block))
      p.logger.warn({ err: (err as Error).message, blocksKept: keep.size }, 'baseline merge: no room for the history marker; merging only what the current horizon allows')
      drop = drop.filter(d => !keep.has(d.block))
      overwrite = overwrite.filter(v => !keep.has(v.block))
      trimmed = trimmed.filter(v => !keep.has(v.block))
      for (let i = visible.length - 1; i >= 0; i--) if (keep.has(visible[i].block)) visible.splice(i, 1)
    }
    for (const [block, seq, position, crc] of repoint) index.batch.addBlock(block, seq, position, crc)
    for (const { block, seq } of drop) index.batch.historyDeletes.push2(block, seq)
    await index.commitDurably()
    for (const v of overwrite) inBaseline.delete(v.block)
    await publish(existing?.cutSeq ?? 0)
  }

  const data: Buffer[] = []
  for (const v of visible) data.push(await p.reader.readRun(v.block, 1, v.position, Uint32Array.of(v.crc)))
  await p.reads.drain() // a read that found an overwritten slot before the repointing ends first
  const handle = await p.reader.baselineHandle()
  let done = 0
  for (const [i, v] of visible.entries()) {
    await handle.writev([data[i]], v.block * B)
    onProgress?.(++done, visible.length)
  }
  // The trimmed blocks' slots, no longer listed (published above) nor read (drained): holes.
  const cleared = [...trimmed.map(v => v.block), ...unlistedTrimmed].sort((a, b) => a - b)
  if (cleared.length > 0) await punchHoles(layer, baselineFiles(p.dir).image, slotRuns(cleared, B))
  await handle.datasync()
  await layer.syncDir(baselineFiles(p.dir).dir)
  for (const v of visible) {
    inBaseline.set(v.block, { seq: v.seq, crc: v.crc })
    origins.set(v.block, { block: v.block, seq: v.seq, position: v.position })
  }
  // Before the index points at the baseline: a replica's checkpoint looks every such row up here.
  await writeBaselineOrigins(layer, p.dir, p.config.uuid, [...origins.values()].filter(o => inBaseline.get(o.block)?.seq === o.seq))
  await publish(cutSeq)
  // Only now does the index point at the baseline; the log copies become unreferenced.
  for (const v of visible) {
    map.set(v.block, BASELINE_BASE + v.block * B, v.crc, v.seq)
    index.batch.addBlock(v.block, v.seq, BASELINE_BASE + v.block * B, v.crc)
  }
  await index.commitDurably()
  return { blocks: visible.length, cutSeq, trimmedSlots: trimmed.length }
}

/** Byte ranges of the slots of `blocks` (ascending), consecutive ones as one range. */
function slotRuns (blocks: number[], B: number): Array<[number, number]> {
  const runs: Array<[number, number]> = []
  for (const b of blocks) {
    const last = runs.at(-1)
    if (last && last[0] + last[1] === b * B) last[1] += B
    else runs.push([b * B, B])
  }
  return runs
}

/**
 * Where version `seq` of `block` was first written, if its bytes can still be read there:
 * the write entry's segment is on backing storage, or still local and not freed.
 */
async function originalPosition (p: StoreParts, block: number, seq: number): Promise<number | undefined> {
  const e = await p.db.entry(seq)
  if (!e || e.kind !== EntryKind.write || block < e.block || block >= e.block + e.count) return undefined
  const position = e.position + tableBytes({ kind: EntryKind.write, count: e.count }) + (block - e.block) * p.config.blockBytes
  const id = Math.floor(position / p.config.segmentBytes)
  if (p.segments.isArchived(id)) return position
  if (!e.freed && p.segments.hasLocal(id)) return position
  return undefined
}
