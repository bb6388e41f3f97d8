import path from 'node:path'
import t from 'tap'
import { SEGMENT_HEADER_BYTES, segmentFileName } from '../src/store/format'
import type { Store } from '../src/store/store'
import { mirroredSimStore } from './helpers/mirrored-sim-store'
import { writeRandom } from './helpers/sim-layer'

/**
 * helper-75's D2: with mirror=2, a segment made ahead of its roll (next-segment.ts) is created
 * one copy after the other, so a kill -9 in between leaves it as a header on one volume and
 * nothing on the other. Recovery took that copy alone as the current segment, and every write
 * acknowledged after the reopen had one copy until a pool repair. It holds no entry: recovery
 * now gives it its second copy before anything is appended to it.
 */
const B = 4096
const SIZE = 8 * 1024 * 1024
const SEGMENT = 1024 * 1024 + 64 * 1024

const currentId = (store: Store): number => Math.floor(store.status().index.position / SEGMENT)

t.test('a segment made ahead with one of its two copies when killed: the reopen gives it the other before writes go there', async t => {
  const { sim, rng, open } = await mirroredSimStore(t, 'mirror-ahead-one-copy', 0xd2, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT })
  const model = Buffer.alloc(SIZE)
  const store = await open()
  while (store.status().index.position % SEGMENT < 0.6 * SEGMENT) await writeRandom(store, model, rng, 16)
  t.equal(currentId(store), 0, 'still in segment 0')
  const copiesOf1 = (): string[] => sim.files().filter(f => path.basename(f) === segmentFileName(1))
  for (let i = 0; i < 2000 && !(copiesOf1().length === 2 && copiesOf1().every(f => sim.readFile(f)!.length >= SEGMENT_HEADER_BYTES)); i++) await new Promise(resolve => setImmediate(resolve))
  t.equal(copiesOf1().length, 2, 'segment 1 was made ahead with two copies')
  await store.flush()
  await store.abandon() // kill -9 ...
  const removed = copiesOf1()[1]
  await sim.remove(removed) // ... before the second copy was created

  const again = await open()
  t.equal(currentId(again), 1, 'the segment made ahead is the current one')
  t.equal(again.volumesOf(1)?.length, 2, `it has two copies (${again.volumesOf(1)?.join(', ')})`)
  for (let i = 0; i < 8; i++) await writeRandom(again, model, rng, 16)
  await again.flush()
  t.equal(currentId(again), 1, 'the writes went to segment 1')
  const files = copiesOf1()
  t.equal(files.length, 2, 'segment 1 has a file on both volumes')
  t.ok(files.length === 2 && sim.readFile(files[0])!.equals(sim.readFile(files[1])!), 'and both hold the acknowledged writes')
  t.same(new Set(again.volumesOf(1)), new Set(files.map(f => path.basename(path.dirname(path.dirname(f))))), 'the store names both')
  t.ok((await again.verify({ copies: 2 })).ok, 'verify with two copies asked is clean')
  await again.close()

  // The volume of the copy that survived the kill lost: the copy the reopen made serves every acknowledged write.
  const kept = files.find(f => f !== removed)!
  await sim.remove(kept)
  const one = await open()
  t.ok((await one.read(0, SIZE)).equals(model), 'every byte reads back without the copy that survived the kill')
  await one.close()
})
