// receive applied a stream's zero records as writes of zeros: blocks the sender had trimmed (or
// written as zeros) became data on the receiver, kept in its log and, once merged, in its
// baseline, where the sender freed them (helper-74). Now a zero record is a trim on the
// receiver too: the images read the same, and the receiver frees the space the sender freed.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { Store } from '../src/store'
import { baselineFiles } from '../src/store/baseline'
import { applyAssignments, defaultPolicy, readPolicy, writePolicy } from '../src/policy/policy'
import { logdisk, tmpDir } from './helpers/cli'

const MiB = 1024 * 1024
const allocated = (file: string): number => fs.statSync(file).blocks * 512
const zeros = (b: Buffer): boolean => b.every(x => x === 0)
const noHistory = (store: string): void => writePolicy(store, applyAssignments(readPolicy(store), ['history.keep=0', 'compact.every=0']))

async function sha (store: string, snapshot: string): Promise<string> {
  const { store: s } = await openStore(store, { checkpointIntervalMs: 0 })
  try {
    return crypto.createHash('sha256').update(await s.readSnapshot(snapshot, 0, s.sizeBytes)).digest('hex')
  } finally {
    await s.close()
  }
}

t.test('an incremental stream\'s zero records become trims on the receiver: same bytes, space freed as on the sender', { timeout: 180_000 }, async t => {
  const dir = tmpDir('receive-zero-trims')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const [a, b] = [path.join(dir, 'a'), path.join(dir, 'b')]
  await Store.create(a, { sizeBytes: 16 * MiB, segmentBytes: 2 * MiB })
  writePolicy(a, applyAssignments(defaultPolicy(), ['history.keep=0', 'compact.every=0']))
  let s = (await openStore(a)).store
  try {
    await s.write(0, crypto.randomBytes(8 * MiB))
    await s.snapshot({ name: 's1' })
  } finally {
    await s.close()
  }
  const full = path.join(dir, 's1.stream')
  const sent1 = await logdisk('send', a, 's1', '--out', full)
  t.equal(sent1.code, 0, sent1.stderr)
  const got1 = await logdisk('receive', b, '--in', full)
  t.equal(got1.code, 0, got1.stderr)
  noHistory(b)
  let r = (await openStore(b)).store
  try {
    t.equal((await r.compactIntoBaseline()).blocks, 2048, 'the receiver merged s1\'s 8 MiB into its baseline')
  } finally {
    await r.close()
  }
  const image = baselineFiles(b).image
  const before = allocated(image)
  t.ok(before >= 8 * MiB, `its baseline holds them (${before} bytes allocated)`)

  // Trimmed blocks (1 MiB..5 MiB) and blocks written as zeros (6 MiB..7 MiB): 1280 zero blocks.
  s = (await openStore(a)).store
  try {
    await s.discard(MiB, 4 * MiB)
    await s.write(6 * MiB, Buffer.alloc(MiB))
    await s.snapshot({ name: 's2' })
  } finally {
    await s.close()
  }
  const inc = path.join(dir, 's2.stream')
  const sent2 = await logdisk('send', a, 's2', '--from', 's1', '--out', inc, '--json')
  t.equal(sent2.code, 0, sent2.stderr)
  t.equal(JSON.parse(sent2.stdout).zeroBlocks, 1280, 'the incremental carries the 1280 blocks as zero records')
  const got2 = await logdisk('receive', b, '--in', inc)
  t.equal(got2.code, 0, got2.stderr)
  t.equal(await sha(b, 's2'), await sha(a, 's2'), 's2 reads the same on both sides')

  const log = JSON.parse((await logdisk('log', b, '--json')).stdout) as Array<{ kind: string, count?: number }>
  const trimmed = log.filter(e => e.kind === 'trim').reduce((n, e) => n + (e.count ?? 0), 0)
  t.equal(trimmed, 1280, 'the receiver\'s log holds them as trims, not as data')
  t.equal((await logdisk('delete', b, 's1')).code, 0)
  r = (await openStore(b)).store
  try {
    const merged = await r.compactIntoBaseline()
    t.equal(merged.trimmedSlots, 1280, 'a merge after the receive clears their 1280 baseline slots')
    t.ok(zeros(await r.read(MiB, 4 * MiB)) && zeros(await r.read(6 * MiB, MiB)), 'they read zeros')
    t.notOk(zeros(await r.read(0, MiB)), 'the blocks around them keep their data')
    const v = await r.verify()
    t.ok(v.ok, `the receiver verifies: ${v.problems.join('; ')}`)
  } finally {
    await r.close()
  }
  const after = allocated(image)
  t.ok(after <= before - 5 * MiB + 64 * 1024, `the receiver's baseline gave 5 MiB back (${before} -> ${after} bytes allocated)`)
})
