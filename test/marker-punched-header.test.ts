// A freed marker that ends a run can have its own header punched out (the punch covers
// whole pages from just past the run's first header to the run's end). A later pass whose run
// ends at that marker reads the marker's length from its header (compaction-pass.ts
// entryLength) and failed: every later compaction of the store failed with IO (found by a
// hostile review, 2026-12-04). A marker's length is now in its index record (`bytes`).
import t from 'tap'
import { EntryKind } from '../src/store/format'
import { Store, type OpenOptions } from '../src/store/store'
import { scratchDir } from './helpers/sim-layer'

const B = 4096
const SEG = 258 * B
const OPTS: Partial<OpenOptions> = { checkpointIntervalMs: 0, historyKeepMs: 0 }

t.test('a pass whose run ends at a marker an earlier pass freed and punched', async t => {
  const dir = scratchDir(t, 'marker-punched-marker')
  await Store.create(dir, { sizeBytes: 1024 * B, blockBytes: B, segmentBytes: SEG })
  const s = await Store.open(dir, OPTS)
  t.teardown(() => s.close().catch(() => undefined))
  // P (padding sync, note of 3823 chars: 3904 bytes), W1, W2, M (sync "m", 80 bytes), W3:
  // M's header crosses a page boundary.
  await s.syncPoint('p'.repeat(3823))
  await s.write(1 * B, Buffer.alloc(B, 'W1'))
  await s.write(2 * B, Buffer.alloc(B, 'W2'))
  const m = await s.syncPoint('m')
  await s.write(3 * B, Buffer.alloc(B, 'W3'))
  for (let b = 10; b < 300; b++) await s.write(b * B, Buffer.alloc(B, `f${b}`)) // seals segment 0
  let mPos = -1
  for await (const e of s.entries(m.seq, m.seq)) mPos = e.position
  t.ok(mPos % B > B - 64, `M's header crosses a page boundary (at ${mPos % B} of its page)`)
  t.equal(Math.floor(mPos / SEG), 0, 'M is in segment 0')

  await s.write(2 * B, Buffer.alloc(B, 'W2b')) // W2 dead
  await s.compact({})
  let freed: boolean | undefined
  for await (const e of s.entries(m.seq, m.seq)) freed = e.freed === true
  t.equal(freed, true, 'pass 1 freed M (last of the run W2, M) and punched the run')

  await s.write(1 * B, Buffer.alloc(B, 'W1b')) // W1 dead: the run P, W1, W2, M is fresh
  await t.resolves(s.compact({}), 'pass 2 compacts')
  await s.write(4 * B, Buffer.alloc(B, 'W4'))
  await t.resolves(s.compact({}), 'and so does the next one')
  t.ok((await s.verify()).ok, 'verify is clean')
})
