// An index rebuild scans an archived segment's copy fetched from backing storage, and used to
// take whatever local file it found for that segment as its local copy. A local file may be a
// mirror copy the store had dropped after a failed write (its last free headers never synced,
// or its tail missing), which only the next open or the archive pass removes; and the archive
// pass's removal of every local copy is undone by a power loss until the directory is synced.
// Simulation seed 64018 (REBUILDS=1, markers freed under an archive): such a copy, with a free
// header torn by the power loss at its first entry, became the segment's local copy, and verify
// failed ("impossible free run" at offset 4096). Only local copies whose log reaches where the
// fetched copy's does are kept now; with none, the segment stays archived.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { archiveLink } from '../src/archive/link'
import { parseTarget } from '../src/archive/parse-target'
import { Store, type OpenOptions } from '../src/store/store'
import { scratchDir } from './helpers/sim-layer'

const B = 4096
const SEG = 258 * B
const SIZE = 1024 * B
const SEGMENT_0 = 'seg-000000000000.log'

for (const [name, spoil] of [
  // The free header written over the first entry's, torn: its first bytes (kind free) only.
  ['a torn free header at the start', (bytes: Buffer) => { bytes.writeUInt8(5, 4096 + 4) }],
  // Dropped after a failed write while the segment was the current one: its tail is missing.
  ['a missing tail', (bytes: Buffer) => bytes.subarray(0, 4096 + 40 * (64 + 4 + B))]
] as Array<[string, (bytes: Buffer) => Buffer | undefined]>) {
  t.test(`a rebuild does not take a stale local file of an archived segment (${name}) for its copy`, async t => {
    const dir = scratchDir(t, 'stale-archived-store')
    const target = scratchDir(t, 'stale-archived-target')
    const cfg = await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG })
    const link = archiveLink(parseTarget(target), cfg.uuid)
    const opts = (): Partial<OpenOptions> => ({ checkpointIntervalMs: 0, historyKeepMs: 0, archive: link })
    let s = await Store.open(dir, opts())
    for (let i = 0; i < 300; i++) await s.write((i % 100) * B, Buffer.alloc(B, `a${i}`)) // seals segment 0
    await s.archive({ workingSet: 1 }) // segment 0 to backing storage, its local copy removed
    t.equal(s.status().segments.archived, 1, 'segment 0 is archived')
    const image = await s.read(0, 100 * B)
    await s.close()
    const file = path.join(dir, 'segments', SEGMENT_0)
    t.notOk(fs.existsSync(file), 'no local copy of segment 0')

    // The local file a power loss brought back: a dropped copy, stale.
    const bytes = Buffer.from(await link.get(0))
    fs.writeFileSync(file, spoil(bytes) ?? bytes)
    fs.rmSync(path.join(dir, 'index'), { recursive: true }) // the index lost too: a full rebuild
    s = await Store.open(dir, opts())
    t.teardown(() => s.close().catch(() => undefined))
    t.ok(s.recovery.rebuiltIndex, 'the index was rebuilt from the log')
    t.equal(s.status().segments.archived, 1, 'segment 0 stays archived')
    t.notOk(fs.existsSync(file), 'the stale file was removed')
    t.ok((await s.read(0, 100 * B)).equals(image), 'the image reads the same')
    const v = await s.verify()
    t.same(v.problems, [], 'verify is clean')
  })
}

t.test('a rebuild keeps a local copy of an archived segment that holds what backing storage holds', async t => {
  const dir = scratchDir(t, 'kept-archived-store')
  const target = scratchDir(t, 'kept-archived-target')
  const cfg = await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG })
  const link = archiveLink(parseTarget(target), cfg.uuid)
  const opts = (): Partial<OpenOptions> => ({ checkpointIntervalMs: 0, historyKeepMs: 0, archive: link })
  let s = await Store.open(dir, opts())
  for (let i = 0; i < 20; i++) await s.write((200 + i) * B, Buffer.alloc(B, `k${i}`)) // live in segment 0 for good
  for (let i = 0; i < 300; i++) await s.write((i % 100) * B, Buffer.alloc(B, `a${i}`)) // seals segment 0
  await s.compact({ cleanBelow: 0 }) // archives segment 0, then frees and punches dead entries in its local copy
  t.equal(s.status().segments.archived, 0, 'segment 0 has its local copy')
  t.notOk(fs.readFileSync(path.join(dir, 'segments', SEGMENT_0)).equals(await link.get(0)), 'freed and punched there, not on backing storage')
  const image = await s.read(0, 256 * B)
  await s.close()
  fs.rmSync(path.join(dir, 'index'), { recursive: true })
  s = await Store.open(dir, opts())
  t.teardown(() => s.close().catch(() => undefined))
  t.ok(s.recovery.rebuiltIndex, 'the index was rebuilt from the log')
  t.equal(s.status().segments.archived, 0, 'the punched local copy is kept')
  t.ok(fs.existsSync(path.join(dir, 'segments', SEGMENT_0)), 'its file is there')
  t.ok((await s.read(0, 256 * B)).equals(image), 'the image reads the same')
  t.same((await s.verify()).problems, [], 'verify is clean')
})
