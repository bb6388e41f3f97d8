import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { inFlightBytes, segmentFileName } from '../src/store/format'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { SimFileLayer } from '../src/testing/sim-file-layer'

/**
 * The project's crash model (SimFileLayer `pages`): a power loss keeps any mix of a file's
 * unsynced pages. Every page written since the last flush may be lost, with more than
 * inFlightBytes (about 8 MiB for 4 KiB blocks, the writevs of one group commit: all that
 * recovery's rule for older releases allows for) written after it: a lost data page of an
 * unflushed write with 8+ MiB of unflushed writes after it. The entries after it record how
 * far the last flush made the log durable (`durableSeq`, store format 3), which does not
 * reach it: recovery cuts it as a torn write, and its blocks read their flushed versions
 * (before format 3 it was kept as damage and read EIO). The other side, bit rot in an entry
 * a later one records as flushed: test/durable-seq.test.ts.
 */
const B = 4096
const SIZE = 32 * 1024 * 1024
const SEGMENT = 4096 + 16 * 1024 * 1024

function tmpDir (t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'attack3-torn-reach-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

t.test('an unflushed write whose data page a power loss lost, followed by more unflushed data than a group commit holds: its blocks read their flushed versions', async t => {
  const dir = tmpDir(t)
  const sim = new SimFileLayer()
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT }, sim)
  const open = (): Promise<Store> => Store.open(dir, { fileLayer: sim, checkpointIntervalMs: 0 })
  const store = await open()
  const rng = new Rng(0x7ea2)
  const X = 3
  const v1 = rng.bytes(4 * B)
  await store.write(X * B, v1)
  await store.flush()
  await store.checkpoint()
  const start = store.status().index.position % SEGMENT
  await store.write(X * B, rng.bytes(4 * B)) // never flushed: blocks X..X+3
  const end = store.status().index.position % SEGMENT
  // More unflushed writes than inFlightBytes, elsewhere on the disk.
  const after = inFlightBytes(B) + 1024 * 1024
  for (let done = 0; done < after; done += 256 * B) await store.write(64 * B + (done % (16 * 1024 * 1024)), rng.bytes(256 * B))
  await store.abandon()
  // The power fails: every page reached the disk but one wholly inside the second write's data.
  const page = Math.ceil((start + 64 + 16) / 4096) * 4096
  t.ok(page + 4096 < end, 'a page inside the data')
  const seg0 = path.join(dir, 'segments', segmentFileName(0))
  sim.poke(seg0, page, Buffer.alloc(4096))
  sim.crash(rng)
  const again = await open()
  let got: Buffer | undefined
  try {
    got = await again.read(X * B, 4 * B)
  } catch (err) {
    t.fail(`reading block ${X} failed: ${(err as Error).message}`)
  }
  if (got) t.ok(got.equals(v1), `blocks ${X}..${X + 3} read their flushed versions`)
  t.match(again.recovery.cut?.reason ?? '', /no entry after it records as flushed/, 'the torn write was cut: no later entry records it as flushed')
  t.same(again.recovery.damaged, [], 'no damage reported')
  const report = await again.verify()
  t.ok(report.ok, `verify clean (${report.problems.join('; ')})`)
  await again.close()
})
