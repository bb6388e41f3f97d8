// Range fetch for cold reads (docs/REPLICATION.md): a lazily recovered store's first read of
// a block in a segment left on the replica fetches only the frames that cover it (the replica
// writes its segment objects framed, LDARCH2), not the whole segment; a read in that frame
// again fetches nothing (decoded frames are kept); a scan fetches no segment twice;
// the background fetch brings whole segments back. Counted with a wrapping target; checked byte for byte. Also against s3rver
// (S3 Range requests).
import path from 'node:path'
import fs from 'node:fs'
import t, { type Test } from 'tap'
import { parseTarget, type ArchiveTarget } from '../src/archive'
import { openStore } from '../src/app/open'
import { Hydrator, Replicator, createFromReplica, newestManifest } from '../src/replicate'
import { startS3Server } from './helpers/s3-server'
import { imageSha, labelledPattern, newReplicatedStore, testTmp, until } from './helpers/replica-fixture'

t.setTimeout(300_000)

const MiB = 1024 * 1024
const SIZE = 64 * MiB
const SEGMENT = 8 * MiB
const pattern = (seed: number, bytes: number): Buffer => labelledPattern('range', seed, bytes)
const tmp = (t: Test, name: string): string => testTmp(t, 'range', name)


/** A target that counts the bytes its gets and ranged gets return. */
function counting (target: ArchiveTarget): ArchiveTarget & { whole: number, ranged: number, wholeGets: string[] } {
  const c = Object.create(target) as ArchiveTarget & { whole: number, ranged: number, wholeGets: string[] }
  c.whole = 0
  c.ranged = 0
  c.wholeGets = []
  c.get = async name => { const b = await target.get(name); c.whole += b.length; c.wholeGets.push(name); return b }
  c.getRange = async (name, at, n) => { const b = await target.getRange!(name, at, n); c.ranged += b.length; return b }
  return c
}

const S3 = startS3Server('logdisk-range')
S3.catch(() => undefined)
t.teardown(async () => { await (await S3).stop() })

const backends: Array<{ name: string, spec: (t: Test) => string, target: (spec: string) => Promise<ArchiveTarget> }> = [
  { name: 'directory', spec: t => { const d = path.join(tmp(t, 'target'), 'replica'); fs.mkdirSync(d); return d }, target: async spec => parseTarget(spec) },
  { name: 's3rver', spec: () => 's3://logdisk-range/r1', target: async spec => parseTarget(spec, {}, { s3: (await S3).settings, settleMs: 300 }) }
]

for (const b of backends) {
  t.test(`${b.name}: a cold read fetches one frame, not the segment`, async t => {
    const spec = b.spec(t)
    const dir = path.join(tmp(t, 'a'), 'store')
    const store = await newReplicatedStore(dir, spec, { sizeBytes: SIZE, segmentBytes: SEGMENT })
    t.teardown(() => store.close())
    const target = await b.target(spec)
    t.teardown(() => target.close())
    const r = await Replicator.start(store, target, { spec, intervalMs: 100, indexEverySegments: 2 })
    t.teardown(() => r.stop())
    await store.write(0, pattern(1, 40 * MiB)) // random: frames do not compress
    await store.flush()
    await until('the replica to catch up with an index checkpoint', async () => {
      const s = await r.status()
      return s.lagBytes === 0 && s.shippedSeq === store.status().index.seq && !!(await newestManifest(target))?.manifest.index
    })
    const want = await imageSha(store)

    const other = path.join(tmp(t, 'b'), 'store')
    const source = counting(await b.target(spec))
    t.teardown(() => source.close())
    const rec = await createFromReplica(other, source, { spec })
    t.equal(rec.mode, 'lazy')
    t.ok(rec.remoteSegments >= 2, `${rec.remoteSegments} segments left on the replica`)
    const copy = (await openStore(other)).store
    try {
      source.whole = 0
      source.ranged = 0
      source.wholeGets.length = 0
      const started = process.hrtime.bigint()
      const cold = await copy.read(1 * MiB + 8192, 4096) // in segment 0, on the replica only
      const ms = Number(process.hrtime.bigint() - started) / 1e6
      t.ok(cold.equals(await store.read(1 * MiB + 8192, 4096)), 'the cold block, byte for byte')
      t.comment(`${b.name}: first read of a cold 4 KiB block: ${ms.toFixed(1)} ms, ${source.ranged} bytes by range, ${source.whole} whole (segment ${SEGMENT} bytes)`)
      t.equal(source.whole, 0, 'no whole object fetched')
      t.ok(source.ranged > 4096 && source.ranged < 2 * MiB + 8192, `only the frame that holds it and the header (${source.ranged} bytes)`)
      t.notOk(fs.existsSync(path.join(other, 'cache')) && fs.readdirSync(path.join(other, 'cache')).length > 0, 'nothing cached')
      // Another block of that frame: from the decoded frames kept, nothing fetched.
      const before = source.ranged
      t.ok((await copy.read(1 * MiB + 65536, 4096)).equals(await store.read(1 * MiB + 65536, 4096)))
      t.equal(source.ranged, before, 'a read in the same frame fetches nothing')
      // Another frame of that segment: that frame only.
      t.ok((await copy.read(5 * MiB, 4096)).equals(await store.read(5 * MiB, 4096)))
      t.ok(source.ranged - before > 4096 && source.ranged - before < 1 * MiB + 8192, `one more frame (${source.ranged - before} bytes)`)
      t.equal(source.whole, 0, 'still no whole object')
      t.equal(await imageSha(copy), want, 'current.img is byte-identical')
      // A scan (4 MiB reads: whole frames by range, or after a few reads the whole segment, once).
      t.equal(new Set(source.wholeGets).size, source.wholeGets.length, `no segment fetched whole twice (${source.wholeGets.length} whole, ${source.ranged} bytes by range)`)
      const h = new Hydrator(copy)
      await h.done()
      t.same(h.pending(), [], 'the background fetch brought every segment back whole')
      t.equal(await imageSha(copy), want)
      const v = await copy.verify()
      t.same(v.problems, [], 'verify finds nothing')
    } finally {
      await copy.close()
    }
  })
}
