// With the sequential volume-id policy without reuse, a deleted snapshot's id is never given
// again. Once compaction freed the markers of deleted snapshots, an index rebuilt from the log
// counts ids on from the highest marker left, and gives a deleted snapshot's id to a new one:
// the rebuilt index disagreed with the live one (highestVolumeId; found by a hostile review,
// 2026-12-04). The newest marker with the highest id now stays.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { Store, type OpenOptions } from '../src/store/store'
import type { VolumeIdPolicy } from '../src/store/snapshots'
import { scratchDir } from './helpers/sim-layer'

const B = 4096
const SEG = 258 * B
const OPTS: Partial<OpenOptions> = { checkpointIntervalMs: 0, historyKeepMs: 0 }
const NO_REUSE: VolumeIdPolicy = { mode: 'sequential', constant: 1, reuse: false }

t.test('no reuse of volume ids survives an index rebuild after markers were freed', async t => {
  const dir = scratchDir(t, 'marker-id-reuse')
  await Store.create(dir, { sizeBytes: 1024 * B, blockBytes: B, segmentBytes: SEG })
  let s = await Store.open(dir, OPTS)
  await s.write(0, Buffer.alloc(B, 'a'))
  const a = await s.snapshot({ name: 'a', idPolicy: NO_REUSE })
  const b = await s.snapshot({ name: 'b', idPolicy: NO_REUSE })
  t.same([a.id, b.id], [1, 2])
  await s.deleteSnapshot('b')
  for (let i = 0; i < 600; i++) await s.write((i % 64) * B, Buffer.alloc(B, `x${i}`)) // seal the segments
  await s.compact({})
  await s.close()

  const live = fs.mkdtempSync(path.join(path.dirname(dir), 'marker-id-reuse-live-'))
  fs.cpSync(dir, live, { recursive: true })
  t.teardown(() => fs.rmSync(live, { recursive: true, force: true }))
  s = await Store.open(live, OPTS) // a copy of the store with its live index
  t.equal((await s.snapshot({ name: 'c', idPolicy: NO_REUSE })).id, 3, 'the live index gives id 3 (2 was deleted, never reused)')
  await s.close()

  fs.rmSync(path.join(dir, 'index'), { recursive: true })
  s = await Store.open(dir, OPTS)
  t.teardown(() => s.close().catch(() => undefined))
  t.ok(s.recovery.rebuiltIndex)
  t.equal((await s.snapshot({ name: 'c', idPolicy: NO_REUSE })).id, 3, 'the rebuilt index gives id 3 too (never the deleted 2)')
})
