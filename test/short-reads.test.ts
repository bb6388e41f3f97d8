import path from 'node:path'
import t from 'tap'
import { Rng } from '../src/testing/rng'
import { SimulationWorker } from '../src/testing/simulation-worker'
import { mirroredStore, scratchDir } from './helpers/sim-layer'

/**
 * read(2) may return fewer bytes than asked for before the end of a file (a signal, a network
 * file system under a pool volume), and every reader must ask again for the rest. The
 * simulated disk never did until SimFileLayer.shortReads: with it, every seed of the
 * simulation failed at once, the first open refusing its own segment 0 as "too short"
 * (segment.ts read the header page with one read). The same one-read pattern was in the
 * read of another mirror copy after a checksum mismatch, the read back from backing storage,
 * the marker length check of compaction, the foreign-segment check, verify's baseline reads
 * and the copy of a cut tail to lost+found; all read the whole range now (readUpTo).
 */
const B = 4096
t.setTimeout(600_000)

t.test('a mirrored copy that fails its checksum is served from the other copy, read in short pieces', async t => {
  const dir = scratchDir(t, 'short-reads')
  const { sim, open } = await mirroredStore(dir, { sizeBytes: 4 * 1024 * 1024, blockBytes: B, segmentBytes: 2 * 1024 * 1024 })
  let s = await open()
  const blocks = Array.from({ length: 8 }, (_, i) => Buffer.alloc(B, i + 1))
  await s.write(0, Buffer.concat(blocks))
  await s.flush()
  await s.close()
  // Bit rot in every block on copy v1, the copy reads try first.
  const seg = path.join(dir, 'vol-v1', 'seg-000000000000.log')
  const content = sim.readFile(seg)!
  for (const b of blocks) {
    const at = content.indexOf(b)
    t.ok(at > 0, 'the block is in the segment')
    sim.poke(seg, at + 100, Buffer.from([0xee]))
  }
  sim.shortReads = new Rng(0x5407)
  s = await open()
  let served = 0
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < blocks.length; i++) {
      const got = await s.read(i * B, B).catch((err: Error) => Buffer.from(err.message))
      if (got.equals(blocks[i])) served++
    }
  }
  t.equal(served, 3 * blocks.length, 'every read returns the good copy\'s bytes (before: CORRUPT when the second copy\'s read came back short)')
  await s.close()
})

t.test('the simulation with short reads', async t => {
  // 900000-900003 failed at once before (segment 0 "too short"); with these options they run
  // every activity, power losses and rebuilds with reads coming back short.
  const sim = new SimulationWorker()
  t.teardown(() => sim.close())
  const runs: Array<[number, Record<string, unknown>]> = [
    [900000, {}], [900001, {}], [900002, {}], [900003, {}],
    [910000, { segmentBlocks: 1032, writevMaxBytes: 16384, crashPages: true, rebuildAfterPowerLoss: true }]
  ]
  for (const [seed, opts] of runs) {
    const outcome = await sim.run(seed, { ...opts, shortReads: true }).then(() => 'ok', (err: Error) => err.message.split('\n')[0])
    t.equal(outcome, 'ok', `seed ${seed} passes`)
  }
})
