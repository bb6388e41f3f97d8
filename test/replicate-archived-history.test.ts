// A store with backing storage that keeps its history (archive.target) compacts by archiving a
// segment whole, then punching the versions it frees out of the local file: reads of them go
// to the archive. Replication shipped the local file as it was, so a segment punched before
// it was shipped reached the replica without those versions, and a store recovered from the
// replica gave older bytes for those points, without a word (a hostile test, helper-52's D1).
// Replication ships an archived segment's archive copy: the log as it was written.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { parseTarget } from '../src/archive'
import { Replicator, createFromReplica } from '../src/replicate'
import { openStore } from '../src/app/open'
import type { Store } from '../src/store'
import { Rng } from '../src/testing/rng'
import { newReplicatedStore, testTmp, until } from './helpers/replica-fixture'

const MiB = 1024 * 1024
const SIZE = 16 * MiB
const B = 4096

/** sha256 of the image at sequence `seq`, or the error that refused it. */
async function shaAt (store: Store, seq: number): Promise<string> {
  const img = Buffer.alloc(SIZE)
  try {
    for await (const { block, data } of store.imageAt(seq)) data.copy(img, block * B)
  } catch (err) {
    return `refused: ${(err as Error).message}`
  }
  return crypto.createHash('sha256').update(img).digest('hex')
}

t.test('segments compacted (punched) before they were shipped reach the replica whole: every point restores the same bytes there', { timeout: 300_000 }, async t => {
  const root = testTmp(t, 'repl-arch', 'h')
  const replica = path.join(root, 'replica')
  const archive = path.join(root, 'archive')
  fs.mkdirSync(replica)
  fs.mkdirSync(archive)
  // Replication comes later: the policy names the archive only.
  const dir = path.join(root, 'g')
  const g = await newReplicatedStore(dir, '', { sizeBytes: SIZE, segmentBytes: 2 * MiB }, [`archive.target=${archive}`, 'compact.every=0'])
  t.teardown(() => g.close())
  const rng = new Rng(0x52d1)
  const points: number[] = []
  for (let i = 0; i < 1500; i++) {
    await g.write(rng.int(512) * B, rng.bytes(B))
    if (i % 20 === 19) {
      await g.flush()
      if (i % 250 === 239) points.push(g.status().index.seq)
    }
  }
  await g.flush()
  const report = await g.compact({ cleanBelow: 0 }) // punch only: no segment is cleaned and recycled
  t.ok(report.runsPunched > 0, `compaction punched freed versions out of local files (${report.runsPunched} runs)`)
  const want = new Map<number, string>()
  for (const seq of points) want.set(seq, await shaAt(g, seq))
  t.ok([...want.values()].every(s => !s.startsWith('refused')), 'every point restores on the store itself (from its archive)')

  const target = parseTarget(replica)
  const r = await Replicator.start(g, target, { spec: replica, intervalMs: 100, indexEverySegments: 2 })
  await until('the replica to catch up', async () => { const s = await r.status(); return s.lagBytes === 0 && s.shippedSeq === g.status().index.seq })
  await r.stop()
  await target.close()

  const h = path.join(root, 'h')
  await createFromReplica(h, parseTarget(replica), { spec: replica })
  const copy = (await openStore(h)).store
  t.teardown(() => copy.close())
  for (const seq of points) t.equal(await shaAt(copy, seq), want.get(seq), `the point at sequence ${seq} restores the same bytes from the replica's store`)
  t.ok((await copy.verify()).ok, 'verify clean')
})
