// A compaction that stops after its free headers are durable and before its punches (an
// unmount during its batches of dead versions, here) leaves entries flagged freed in the index
// with their bytes still allocated. A later pass sees them freed already, so without a record
// of what waits for its punch those bytes stayed on disk until the segment was recycled, which
// a segment that stays mostly live never is (hostile review, 2026-12-04). The segment record
// says `unpunched` now, in the same index batch as the flags, and the next pass punches.
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { Store, type OpenOptions } from '../src/store/store'
import { scratchDir, tagBlock } from './helpers/sim-layer'

const B = 4096
const SEG = 258 * B // the smallest segment size, in whole pages
const SIZE = 4096 * B
const blk = (tag: string): Buffer => tagBlock(tag, B)

/** Bytes allocated on disk by the store's segment files (punched holes are not). */
function allocated (dir: string): number {
  let bytes = 0
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name)
      if (e.isDirectory()) walk(p)
      else if (/^seg-\d+\.log$/.test(e.name)) bytes += fs.statSync(p).blocks * 512
    }
  }
  walk(dir)
  return bytes
}

/**
 * Rounds of 64 blocks written once (they stay live, so no segment empties) among 192 blocks
 * rewritten every round (their old versions die): every sealed segment ends up a quarter live.
 */
async function fill (t: Test, name: string, opts: Partial<OpenOptions>): Promise<{ dir: string, store: Store }> {
  const dir = scratchDir(t, `logdisk-compaction-stopped-${name}`)
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG })
  const store = await Store.open(dir, { checkpointIntervalMs: 0, historyKeepMs: 0, compactionDeadBatch: 40, ...opts })
  for (let round = 0; round < 8; round++) {
    for (let i = 0; i < 256; i++) {
      const keeper = i % 4 === 0
      await store.write((keeper ? 2000 + round * 64 + i / 4 : 1000 + i) * B, blk(`${name}-r${round}-${i}`))
    }
  }
  await store.flush()
  return { dir, store }
}

t.test('a compaction stopped between its batches leaves nothing unpunched for good', async t => {
  // The twin compacts in one go.
  const twin = await fill(t, 'twin', {})
  const whole = await twin.store.compact({ cleanBelow: 0 })
  t.ok(whole.freeBatches >= 2 && whole.bytesPunched > 0, `the twin's pass freed in ${whole.freeBatches} batches and punched ${whole.bytesPunched} bytes`)
  await twin.store.close()
  const twinBytes = allocated(twin.dir)

  // The other one is unmounted right after its first batch of dead versions is committed.
  let offers = 0
  let closing: Promise<void> | undefined
  const stopped = await fill(t, 'stopped', {
    // Offered after the first walk, then after each batch's commit (compaction-pass.ts).
    reclaimMemory: () => { if (++offers === 2) closing = stopped.store.close() }
  })
  await t.rejects(stopped.store.compact({ cleanBelow: 0 }), { code: 'CLOSED' }, 'the pass stops at its next batch')
  await closing
  const before = allocated(stopped.dir)
  t.ok(before > twinBytes + 64 * B, `stopped before punching: ${before} bytes allocated against the twin's ${twinBytes}`)

  // Reopened, the next pass punches what the stopped one freed.
  const again = await Store.open(stopped.dir, { checkpointIntervalMs: 0, historyKeepMs: 0, compactionDeadBatch: 40 })
  const rep = await again.compact({ cleanBelow: 0 })
  t.ok(rep.bytesPunched > 0, `the next pass punched ${rep.bytesPunched} bytes`)
  await again.close()
  const after = allocated(stopped.dir)
  t.ok(after <= twinBytes + 8 * B, `allocated ${after} bytes after it, the twin ${twinBytes}`)

  // The data is all there, and the next pass has nothing more to punch.
  const check = await Store.open(stopped.dir, { checkpointIntervalMs: 0, historyKeepMs: 0 })
  t.teardown(() => check.close().catch(() => undefined))
  t.ok((await check.read(1001 * B, B)).equals(blk('stopped-r7-1')), 'a rewritten block reads its last version')
  t.ok((await check.read(2000 * B, B)).equals(blk('stopped-r0-0')), 'a block written once reads it')
  t.equal((await check.verify()).ok, true, 'verify is clean')
  const last = await check.compact({ cleanBelow: 0 })
  t.equal(last.bytesPunched, 0, 'a third pass punches nothing')
})
