// Hostile paths for the saved block map and its delta (src/store/block-map-file.ts): changes
// made by compaction (moves, frees), a merge into the baseline, trims, a resize, read-only opens
// between write opens, opens without writes, and a crash after each. After every close the map
// loaded from base (and delta) must equal, slot value for value, the map read from the index
// history of a copy; and every block of current.img and of each snapshot reads as the model says.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { openStore } from '../src/app/open'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'

const SEED = Number(process.env.SAVED_MAP_PATHS_SEED ?? 0xb10c)
const B = 4096
const BLOCKS = 1024
const SEGMENT = 1024 * 1024 + 64 * 1024

t.comment(`seed ${SEED} (rerun with SAVED_MAP_PATHS_SEED=${SEED})`)
const rng = new Rng(SEED)

type Image = Map<number, Buffer>

function tmpDir (t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-saved-map-paths-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

function imageOf (m: Image, blocks: number): Buffer {
  const out = Buffer.alloc(blocks * B)
  for (const [b, d] of m) d.copy(out, b * B)
  return out
}

async function scribble (store: Store, m: Image, n: number, blocks: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const count = 1 + rng.int(4)
    const block = rng.int(blocks - count)
    const r = rng.int(12)
    if (r === 0) {
      await store.discard(block * B, count * B)
      for (let k = 0; k < count; k++) m.delete(block + k)
    } else if (r === 1) {
      await store.write(block * B, Buffer.alloc(count * B)) // zeros written
      for (let k = 0; k < count; k++) m.set(block + k, Buffer.alloc(B))
    } else {
      const data = rng.bytes(count * B)
      await store.write(block * B, data)
      for (let k = 0; k < count; k++) m.set(block + k, Buffer.from(data.subarray(k * B, (k + 1) * B)))
    }
  }
}

function mapOf (store: Store): string[] {
  const rows: string[] = []
  ;(store as unknown as { p: { map: { forEach: (fn: (b: number, p: number, c: number, s: number) => void) => void } } }).p.map
    .forEach((b, p, c, s) => rows.push(`${b}:${p}:${c}:${s}`))
  return rows.sort()
}

async function mapFromIndex (t: Test, dir: string): Promise<string[]> {
  const copy = tmpDir(t)
  fs.cpSync(dir, copy, { recursive: true })
  const s = await Store.open(copy, { checkpointIntervalMs: 0, savedBlockMap: false })
  try {
    return mapOf(s)
  } finally {
    await s.close()
  }
}

t.test('every path that changes the map leaves a saved map (base and delta) that equals the index', { timeout: 240_000 }, async t => {
  const dir = tmpDir(t)
  await Store.create(dir, { sizeBytes: BLOCKS * B, blockBytes: B, segmentBytes: SEGMENT })
  let blocks = BLOCKS
  const model: Image = new Map()
  const snaps = new Map<string, Image>()
  let store = await Store.open(dir, { checkpointIntervalMs: 0 })
  await scribble(store, model, 400, blocks)
  await store.snapshot({ name: 's1' }); snaps.set('s1', new Map(model))
  await scribble(store, model, 300, blocks)
  await store.snapshot({ name: 's2' }); snaps.set('s2', new Map(model))
  await scribble(store, model, 200, blocks)
  await store.close()

  let saved = 0
  const check = async (what: string): Promise<void> => {
    const expected = await mapFromIndex(t, dir)
    store = await Store.open(dir, { checkpointIntervalMs: 0 })
    if (store.recovery.blockMap.from === 'saved') saved++
    t.same(mapOf(store), expected, `${what}: the map opened (${store.recovery.blockMap.from}) equals the index's`)
    t.ok((await store.read(0, blocks * B)).equals(imageOf(model, blocks)), `${what}: current image`)
    for (const [name, m] of snaps) {
      // A snapshot keeps the volume's size at its cut (a grow since leaves it as it was).
      const size = store.snapshotSize(store.snapshotNamed(name))
      t.ok((await store.readSnapshot(name, 0, blocks * B)).equals(imageOf(m, size / B)), `${what}: snapshot ${name}`)
    }
  }
  const steps: Array<[string, () => Promise<void>]> = [
    ['few writes and trims', async () => { await scribble(store, model, 15, blocks) }],
    ['no writes at all', async () => {}],
    ['a compaction after a snapshot is deleted', async () => {
      await store.deleteSnapshot('s1'); snaps.delete('s1')
      await scribble(store, model, 10, blocks)
      await store.compact()
    }],
    ['a merge into the baseline', async () => {
      await scribble(store, model, 10, blocks)
      await store.compactIntoBaseline()
    }],
    ['a resize and writes past the old end', async () => {
      await store.resize((blocks + 64) * B)
      const data = rng.bytes(3 * B)
      await store.write((blocks + 10) * B, data)
      for (let k = 0; k < 3; k++) model.set(blocks + 10 + k, Buffer.from(data.subarray(k * B, (k + 1) * B)))
      blocks += 64
    }],
    ['trims only', async () => {
      for (const b of [...model.keys()].slice(0, 5)) { await store.discard(b * B, B); model.delete(b) }
    }],
    ['a snapshot, writes, a compaction', async () => {
      await store.snapshot({ name: 's3' }); snaps.set('s3', new Map(model))
      await scribble(store, model, 20, blocks)
      await store.deleteSnapshot('s2'); snaps.delete('s2')
      await store.compact()
    }]
  ]
  await check('first open')
  for (const [what, step] of steps) {
    await step()
    await store.close()
    await check(`after ${what}`)
    // A read-only open in between changes nothing.
    await store.close()
    const ro = (await openStore(dir, { checkpointIntervalMs: 0 }, [], 'read')).store
    t.ok((await ro.read(0, blocks * B)).equals(imageOf(model, blocks)), `${what}: read-only open reads the image`)
    await ro.close()
    // A write open that crashes after writing: the next open must not trust the saved map.
    store = await Store.open(dir, { checkpointIntervalMs: 0 })
    await scribble(store, model, 5, blocks)
    await store.flush()
    await store.abandon()
    await check(`after ${what}, then a crash`)
  }
  await store.close()
  t.ok(saved > 0, `some opens loaded the saved map (${saved})`)
})
