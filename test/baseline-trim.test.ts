// A block merged into the baseline and trimmed afterwards kept its bytes in baseline.img for
// good: a merge only takes blocks whose data is in the log, so no later merge chose the block
// again, and compaction never touches the baseline. The disk space of deleted, fstrim'd files
// never came back, and their bytes stayed readable in the file (a hostile test, helper-72).
// Now a merge whose cut sees the trim makes the slot a hole; points before the trim that
// history still promises keep reading the old bytes.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { openStore } from '../src/app/open'
import { Store } from '../src/store'
import { baselineFiles } from '../src/store/baseline'
import { applyAssignments, defaultPolicy, writePolicy } from '../src/policy/policy'
import { tmpDir } from './helpers/cli'

const MiB = 1024 * 1024
const allocated = (file: string): number => fs.statSync(file).blocks * 512
const zeros = (b: Buffer): boolean => b.every(x => x === 0)

async function newStore (t: Test, name: string, policy: string[]): Promise<string> {
  const dir = tmpDir(name)
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const store = path.join(dir, 's')
  await Store.create(store, { sizeBytes: 16 * MiB, segmentBytes: 2 * MiB })
  writePolicy(store, applyAssignments(defaultPolicy(), policy))
  return store
}

t.test('with no history kept: a trimmed block\'s baseline slot becomes a hole, and it reads zeros, also after a rebuild', { timeout: 120_000 }, async t => {
  const store = await newStore(t, 'baseline-trim', ['history.keep=0', 'compact.every=0'])
  const image = baselineFiles(store).image
  const { store: s } = await openStore(store)
  try {
    await s.write(0, crypto.randomBytes(8 * MiB))
    await s.flush()
    t.equal((await s.compactIntoBaseline()).blocks, 2048, 'merged 8 MiB into the baseline')
    t.ok(allocated(image) >= 8 * MiB, `the baseline holds it (${allocated(image)} bytes allocated)`)
    await s.discard(MiB, 6 * MiB)
    await s.flush()
    const merged = await s.compactIntoBaseline()
    t.equal(merged.trimmedSlots, 1536, 'the merge after the trim cleared the 1536 trimmed slots')
    t.ok(allocated(image) <= 2 * MiB + 64 * 1024, `baseline.img gave the space back (${allocated(image)} bytes allocated)`)
    const fd = fs.openSync(image, 'r')
    try {
      const slot = Buffer.alloc(6 * MiB)
      fs.readSync(fd, slot, 0, slot.length, MiB)
      t.ok(zeros(slot), 'and the trimmed bytes are gone from the file')
    } finally {
      fs.closeSync(fd)
    }
    t.ok(zeros(await s.read(MiB, 6 * MiB)), 'the trimmed range reads zeros')
    t.notOk(zeros(await s.read(0, MiB)), 'the blocks around it still read their data')
    t.equal((await s.compactIntoBaseline()).trimmedSlots, 0, 'a second merge has nothing to clear')
    const v = await s.verify()
    t.ok(v.ok, `verify is clean: ${v.problems.join('; ')}`)
  } finally {
    await s.close()
  }
  fs.rmSync(path.join(store, 'index'), { recursive: true, force: true })
  const { store: again } = await openStore(store)
  try {
    t.ok(zeros(await again.read(MiB, 6 * MiB)), 'an index rebuilt from the log reads zeros there too')
    t.ok((await again.verify()).ok, 'and verifies')
  } finally {
    await again.close()
  }
})

t.test('a snapshot taken before the trim keeps the old bytes in the baseline; deleted, they go', { timeout: 120_000 }, async t => {
  const store = await newStore(t, 'baseline-trim-snap', ['history.keep=0', 'compact.every=0'])
  const { store: s } = await openStore(store)
  try {
    const data = crypto.randomBytes(4 * MiB)
    await s.write(0, data)
    await s.snapshot({ name: 'a' })
    t.equal((await s.compactIntoBaseline()).blocks, 1024, 'merged up to the snapshot')
    await s.discard(0, 4 * MiB)
    await s.flush()
    t.equal((await s.compactIntoBaseline()).trimmedSlots, 0, 'the snapshot reads the slots: nothing is cleared')
    t.ok((await s.readSnapshot('a', 0, 4 * MiB)).equals(data), 'the snapshot reads the old bytes')
    t.ok(zeros(await s.read(0, 4 * MiB)), 'the image reads zeros')
    await s.deleteSnapshot('a')
    t.equal((await s.compactIntoBaseline()).trimmedSlots, 1024, 'the snapshot deleted, the slots are cleared')
    t.ok(allocated(baselineFiles(store).image) < 64 * 1024, 'and their space given back')
    t.ok((await s.verify()).ok, 'verify is clean')
  } finally {
    await s.close()
  }
})

t.test('points before the trim inside the history window read the old bytes until the window passes them', { timeout: 120_000 }, async t => {
  const store = await newStore(t, 'baseline-trim-window', ['history.keep=1h', 'compact.every=0'])
  let now = Date.now()
  const { store: s } = await openStore(store, { clock: () => now, historyKeepMs: 3600_000 })
  try {
    const data = crypto.randomBytes(4 * MiB)
    await s.write(0, data)
    await s.flush()
    now += 2 * 3600_000
    t.equal((await s.compactIntoBaseline()).blocks, 1024, 'merged what the window no longer holds')
    const before = await s.syncPoint('before the trim')
    await s.discard(0, 4 * MiB)
    await s.flush()
    t.equal((await s.compactIntoBaseline()).trimmedSlots, 0, 'the window holds the point before the trim: nothing is cleared')
    t.ok((await s.readBlocksAt(before.seq, 0, 1024)).data.equals(data), 'it reads the old bytes')
    now += 2 * 3600_000
    t.equal((await s.compactIntoBaseline()).trimmedSlots, 1024, 'once the window passed the trim, the slots are cleared')
    t.ok(zeros(await s.read(0, 4 * MiB)), 'the image reads zeros')
    t.ok((await s.verify()).ok, 'verify is clean')
  } finally {
    await s.close()
  }
})

// A merge that died after it unlisted the trimmed slots in baseline.idx and before it punched
// them left their bytes in baseline.img for good: no later merge listed the slots again, so
// none cleared them (FORMAT.md said "space only"). Now a merge also punches the slots of blocks
// trimmed since the last completed merge that the index does not list.
t.test('a merge killed between unlisting the trimmed slots and punching them: the next merge punches them', { timeout: 120_000 }, async t => {
  const store = await newStore(t, 'baseline-trim-killed', ['history.keep=0', 'compact.every=0'])
  const image = baselineFiles(store).image
  let { store: s } = await openStore(store)
  try {
    await s.write(0, crypto.randomBytes(8 * MiB))
    await s.flush()
    t.equal((await s.compactIntoBaseline()).blocks, 2048, 'merged 8 MiB into the baseline')
    await s.discard(MiB, 6 * MiB)
    await s.flush()
    // The process dies at the punch: after baseline.idx was published without the slots.
    const layer = (s as unknown as { p: { layer: { punchHoles?: unknown, punchHole: unknown } } }).p.layer
    const saved = { punchHoles: layer.punchHoles, punchHole: layer.punchHole }
    const die = async (): Promise<never> => { throw new Error('killed before the punch') }
    layer.punchHoles = die
    layer.punchHole = die
    try {
      await t.rejects(s.compactIntoBaseline(), /killed before the punch/, 'the merge dies at its punch')
    } finally {
      Object.assign(layer, saved)
    }
    t.ok(allocated(image) >= 8 * MiB, `the trimmed slots still hold their bytes (${allocated(image)} bytes allocated)`)
  } finally {
    await s.close()
  }
  s = (await openStore(store)).store
  try {
    t.ok(zeros(await s.read(MiB, 6 * MiB)), 'the trimmed range reads zeros')
    const merged = await s.compactIntoBaseline()
    t.equal(merged.trimmedSlots, 0, 'the index lists none of them any more')
    t.ok(allocated(image) <= 2 * MiB + 64 * 1024, `but the next merge gave their space back (${allocated(image)} bytes allocated)`)
    t.notOk(zeros(await s.read(0, MiB)), 'the blocks around them still read their data')
    t.ok(zeros(await s.read(MiB, 6 * MiB)), 'the trimmed range reads zeros')
    const v = await s.verify()
    t.ok(v.ok, `verify is clean: ${v.problems.join('; ')}`)
  } finally {
    await s.close()
  }
})
