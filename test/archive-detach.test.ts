// Removing the backing storage (`policy set archive.target=` on a mount) while a compaction
// runs. With an archive, compaction judges every superseded version dead (backing storage
// keeps history) and archives a segment before it punches it; without one, it keeps what the
// history window reads and logs a history marker first. A pass that lost its archive between
// the two punched versions without archiving them and dropped them from the index with no
// marker: a restore point inside the window then read zeros, without an error. The archive
// now changes between passes (Store.attachArchive waits for the one running).
import t, { type Test } from 'tap'
import { archiveLink } from '../src/archive/link'
import { parseTarget } from '../src/archive/parse-target'
import { Store } from '../src/store/store'
import { fillSegment, scratchDir, tagBlock } from './helpers/sim-layer'

const B = 4096
const SEG = 258 * B // the smallest segment size, in whole pages
const SIZE = 1024 * B
const tmp = (t: Test, name: string): string => scratchDir(t, `logdisk-archive-detach-${name}`)
const blk = (tag: string): Buffer => tagBlock(tag, B)

t.test('an archive removed during a compaction: a point inside the history window still reads its data', async t => {
  const dir = tmp(t, 'store')
  const cfg = await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG })
  const s = await Store.open(dir, { checkpointIntervalMs: 0, archive: archiveLink(parseTarget(tmp(t, 'target')), cfg.uuid) })
  t.teardown(() => s.close().catch(() => undefined))
  t.equal(s.historyKeepMs, 24 * 3600_000, 'the default history window: a day')

  await s.write(0, blk('A'))
  await fillSegment(s, 100, 'one')
  const point = await s.syncPoint('before B')
  await s.write(0, blk('B'))
  await fillSegment(s, 100, 'two')
  await fillSegment(s, 100, 'three')
  await s.flush()

  let detached: Promise<void> | undefined
  let calls = 0
  const report = await s.compact({ cleanBelow: 0 }, () => {
    calls++
    // The user's `policy set archive.target=` lands while the pass frees its first segment.
    detached ??= s.attachArchive(undefined)
  })
  await detached
  t.ok(calls > 0 && detached !== undefined, `the archive was removed during the pass (${calls} progress calls)`)
  t.ok(report.entriesFreed > 0, `the pass freed entries (${JSON.stringify(report)})`)
  await t.rejects(s.archive({}), { code: 'BAD_ARGUMENT', message: /no archive target/ }, 'the archive is gone once the pass ended')

  // The point is inside the window: it must read what it held, or fail saying so; never
  // another version or zeros.
  t.ok(s.pointHeld(point.seq), 'the point is above the history horizon')
  let got: Buffer | undefined
  try {
    got = (await s.readBlocksAt(point.seq, 0, 1)).data.subarray(0, B)
  } catch (err) {
    t.match((err as Error).message, /archive|checksum|backing/, `reading it fails with a reason: ${(err as Error).message}`)
  }
  if (got !== undefined) t.ok(got.equals(blk('A')), `block 0 at the point reads A (got ${JSON.stringify(got.subarray(0, 12).toString())})`)
  t.ok((await s.read(0, B)).equals(blk('B')), 'the current image reads B')
})
