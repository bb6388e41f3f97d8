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
 * unsynced pages. Recovery (recovery.ts) calls an entry with bad block data a torn write only
 * if every valid entry after it starts within inFlightBytes (about 8 MiB for 4 KiB blocks):
 * the writevs of one group commit. But every page written since the last flush may be lost,
 * and more than that much may have been written since: a lost data page of an unflushed
 * write with 8+ MiB of unflushed writes after it is kept as damage, and its block then reads
 * EIO instead of its flushed version (the simulation's 1 MiB segments never get that far).
 * Left failing: bit rot and a crash tear look alike here (see the report).
 */
const B = 4096
const SIZE = 32 * 1024 * 1024
const SEGMENT = 4096 + 16 * 1024 * 1024

function tmpDir (t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'attack3-torn-reach-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** Known defect, open: the assertions it fails are marked todo (reported, not counted). */
const DEFECT = 'known defect, open: recovery cannot tell a write torn by a power loss more than inFlightBytes before the end of the log from bit rot in flushed data; telling them apart needs the log to say what a flush made durable (a format change), see docs/FORMAT.md'

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
    t.fail(`reading block ${X} failed: ${(err as Error).message}`, { todo: DEFECT })
  }
  if (got) t.ok(got.equals(v1), `blocks ${X}..${X + 3} read their flushed versions`, { todo: DEFECT })
  await again.close()
})
