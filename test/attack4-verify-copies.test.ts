import path from 'node:path'
import t, { type Test } from 'tap'
import { SEGMENT_HEADER_BYTES, segmentFileName } from '../src/store/format'
import { mirroredSimStore } from './helpers/mirrored-sim-store'

/**
 * `logdisk verify` ("reads every entry of the log, checks every CRC") read a mirrored
 * segment through its first copy only: bit rot (or a torn page a power loss left, see
 * attack4-mirror-pages) in another copy went unreported until the first copy was lost, and
 * then the store served EIO for data verify had called sound. Verify now scans every copy.
 */
const B = 4096
const SIZE = 4 * 1024 * 1024
const SEGMENT = 4 * 1024 * 1024 + 64 * 1024

t.test('verify reports a bad block in the second copy of a mirrored segment', async (t: Test) => {
  const { dir, sim, rng, home, open } = await mirroredSimStore(t, 'attack4-verify-copies', 0xa4c0, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT })
  const store = await open()
  const data = rng.bytes(16 * B)
  await store.write(0, data)
  await store.flush()
  const volumes = store.volumesOf(0)!
  t.equal(volumes.length, 2, 'segment 0 has two copies')
  // Both copies carry one header (createdMs read once): a repair copying either keeps the other's bytes (simulation seed 7020).
  const headers = volumes.map(v => sim.readFile(path.join(home.dirOf(v), segmentFileName(0)))!.subarray(0, SEGMENT_HEADER_BYTES))
  t.ok(headers[0].equals(headers[1]), 'the two copies have the same header, byte for byte')
  const clean = await store.verify({ copies: 2 })
  t.ok(clean.ok, 'verify: clean before the rot', { problems: clean.problems })
  // One bit of block 3 flips in the second copy only.
  const second = path.join(home.dirOf(volumes[1]), segmentFileName(0))
  const at = SEGMENT_HEADER_BYTES + 64 + 16 * 4 + 3 * B + 17
  sim.poke(second, at, Buffer.from([sim.readFile(second)![at] ^ 1]))
  t.ok((await store.read(0, 16 * B)).equals(data), 'reads (from the first copy) are fine')
  const report = await store.verify({ copies: 2 })
  t.notOk(report.ok, 'verify reports the rotten copy')
  t.match(report.problems.join('\n'), /block 3 fails its checksum/, 'naming the block', { problems: report.problems })
  t.match(report.problems.join('\n'), new RegExp(volumes[1]), 'and the copy', { problems: report.problems })
  await store.close()
})
