// With backing storage, compaction archives a segment before it frees anything in it, so a
// rebuild (which scans every archived segment's fetched copy: whole history) sees a snapshot
// marker and its deletion marker together. Without it (`policy set archive.target=`), a pass
// frees the markers in the local copies only. Segment 0 was archived while snapshot S stood:
// its archived copy keeps S's marker. Detached, a pass frees S's marker (locally) and the
// deletion marker (segment 2, never archived). Attached again, an index rebuild takes segment
// 0 from backing storage and segment 2 from the pool: S came back, without its versions (found by
// a hostile review, 2026-12-04). A deletion marker now stays while its snapshot's marker is in
// a segment with a copy on backing storage.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { archiveLink } from '../src/archive/link'
import { parseTarget } from '../src/archive/parse-target'
import { Store, type OpenOptions } from '../src/store/store'
import { scratchDir } from './helpers/sim-layer'

const B = 4096
const SEG = 258 * B
const SIZE = 1024 * B

t.test('a snapshot deleted while no archive was attached stays deleted after a rebuild with it', async t => {
  const dir = scratchDir(t, 'marker-archive-marker-store')
  const target = scratchDir(t, 'marker-archive-marker-target')
  const cfg = await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG })
  const opts = (): Partial<OpenOptions> => ({ checkpointIntervalMs: 0, historyKeepMs: 0, archive: archiveLink(parseTarget(target), cfg.uuid) })
  let s = await Store.open(dir, opts())
  for (let b = 0; b < 10; b++) await s.write(b * B, Buffer.alloc(B, `a${b}`))
  await s.snapshot({ name: 'S' }) // in segment 0
  for (let b = 0; b < 10; b++) await s.write(b * B, Buffer.alloc(B, `b${b}`)) // versions S alone sees
  for (let i = 0; i < 300; i++) await s.write((20 + i % 50) * B, Buffer.alloc(B, `f${i}`)) // seals segment 0
  await s.compact({}) // archives segment 0 (S's marker in it) before freeing there
  const archivedBefore = fs.readdirSync(target, { recursive: true }).length
  t.ok(archivedBefore > 0, `backing storage holds segment 0 (${archivedBefore} names)`)
  await s.deleteSnapshot('S')
  await s.snapshot({ name: 'T' }) // the newest with the highest volume id now (that marker stays)
  for (let i = 0; i < 600; i++) await s.write((20 + i % 50) * B, Buffer.alloc(B, `g${i}`)) // seals the deletion's segment
  await s.attachArchive(undefined) // policy set archive.target=
  await s.compact({})
  let freed = 0
  for await (const e of s.entries()) if ((e.kind === 3 || e.kind === 4) && e.freed === true) freed++
  t.equal(freed, 1, 'the pass freed the snapshot marker; the deletion stays while backing storage holds that marker')
  const image = await s.read(0, 80 * B)
  await s.close()

  fs.rmSync(path.join(dir, 'index'), { recursive: true })
  s = await Store.open(dir, opts()) // archive.target set again
  t.teardown(() => s.close().catch(() => undefined))
  t.ok(s.recovery.rebuiltIndex, 'the index was rebuilt from the log')
  t.same(s.snapshots().map(x => x.name), ['T'], 'the deleted snapshot stays deleted')
  t.ok((await s.read(0, 80 * B)).equals(image), 'the image reads the same')
  t.ok((await s.verify()).ok, 'verify is clean')
})
