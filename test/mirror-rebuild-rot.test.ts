import path from 'node:path'
import t from 'tap'
import { SEGMENT_HEADER_BYTES, segmentFileName } from '../src/store/format'
import { mirroredSimStore } from './helpers/mirrored-sim-store'

/**
 * A mirrored store whose index is lost (moved aside as the damaged-index advice says) is
 * rebuilt from the log, and recovery makes every other copy of each segment it replayed match
 * the first one (`matchCopies`). Bit rot in the first copy must not be copied over the intact
 * copy: the block must still read. (Written while chasing simulation seed 7310047, whose cause
 * was elsewhere: test/rebuild-torn-empty-next.test.ts; this plain case held, and is kept as a
 * guard of the copy choice a rebuild makes.)
 */
const B = 4096
const SIZE = 4 * 1024 * 1024
const SEGMENT = 4 * 1024 * 1024 + 64 * 1024

t.test('a rebuild of the index keeps the intact copy of a block that rotted in the first copy', async t => {
  const { sim, rng, home, open, loseIndex } = await mirroredSimStore(t, 'mirror-rebuild-rot', 0x7310047, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT })
  let store = await open()
  const data = rng.bytes(16 * B)
  await store.write(0, data)
  await store.flush()
  const volumes = store.volumesOf(0)!
  t.equal(volumes.length, 2, 'segment 0 has two copies')
  await store.close()

  // One bit of block 3 flips in the first copy only; then the index is lost.
  const first = path.join(home.dirOf(volumes[0]), segmentFileName(0))
  const second = path.join(home.dirOf(volumes[1]), segmentFileName(0))
  const at = SEGMENT_HEADER_BYTES + 64 + 16 * 4 + 3 * B + 17
  sim.poke(first, at, Buffer.from([sim.readFile(first)![at] ^ 1]))
  await loseIndex()

  store = await open()
  t.teardown(() => store.close())
  t.ok(store.recovery.rebuiltIndex, 'the index was rebuilt from the log')
  let read: Buffer | string
  try { read = await store.read(0, 16 * B) } catch (err) { read = (err as Error).message }
  t.ok(Buffer.isBuffer(read) && read.equals(data), `every block reads back (${Buffer.isBuffer(read) ? 'read' : read})`)
  t.equal(sim.readFile(second)![at], data[3 * B + 17], 'the intact copy was not overwritten with the rotten byte')
})
