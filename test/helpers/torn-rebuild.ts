import fs from 'node:fs'
import path from 'node:path'
import type { Test } from 'tap'
import { segmentFileName } from '../../src/store/format'
import type { Store } from '../../src/store/store'

/**
 * The index lost with the power, then an open: a full rebuild from the log, which must take
 * what a crash left at the log's end for a torn tail (cut in segment 0, segment 1 moved
 * aside, no damage reported) and serve every block as flushed or as written after that (never
 * EIO, never a torn mix), with `verify` clean. `newest` is every block as last written;
 * `flushed`, as of the last flush.
 */
export async function checkTornTailRebuild (t: Test, dir: string, open: () => Promise<Store>, flushed: Buffer, newest: Buffer, blockBytes: number): Promise<void> {
  fs.rmSync(path.join(dir, 'index'), { recursive: true, force: true })
  fs.mkdirSync(path.join(dir, 'index'))
  const again = await open()
  t.ok(again.recovery.rebuiltIndex, 'the index was rebuilt from the log')
  t.same(again.recovery.damaged, [], 'no damage reported: the crash tore the end of the log')
  t.equal(again.recovery.cut?.segment, 0, 'the log was cut in segment 0')
  t.ok(again.recovery.orphanedSegments.some(f => path.basename(f).startsWith(segmentFileName(1))), 'segment 1 (unflushed entries only) was moved aside')
  const image = await again.read(0, newest.length)
  let bad = -1
  for (let at = 0; at < newest.length && bad < 0; at += blockBytes) {
    const got = image.subarray(at, at + blockBytes)
    if (!got.equals(flushed.subarray(at, at + blockBytes)) && !got.equals(newest.subarray(at, at + blockBytes))) bad = at / blockBytes
  }
  t.equal(bad, -1, 'every block reads its flushed version or a later one (no EIO, no torn data)')
  const report = await again.verify()
  t.ok(report.ok, `verify clean (${report.problems.join('; ')})`)
  await again.close()
}
