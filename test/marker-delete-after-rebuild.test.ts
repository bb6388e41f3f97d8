// A deletion marker whose snapshot's marker was freed before an index rebuild is
// never freed again: the rebuild does not index freed entries, so MarkerLife finds no record
// for the snapshot's cut and kept the deletion (and the segment it is in) for good (found by a
// hostile review, 2026-12-04). A cut with no record now counts as freed, unless a segment up
// to the deletion's is on backing storage.
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { EntryKind } from '../src/store/format'
import { Store, type OpenOptions } from '../src/store/store'
import { scratchDir } from './helpers/sim-layer'

const B = 4096
const SEG = 258 * B
const OPTS: Partial<OpenOptions> = { checkpointIntervalMs: 0, historyKeepMs: 0 }

const entryOf = async (s: Store, seq: number): Promise<{ kind: number, freed?: boolean } | undefined> => {
  for await (const e of s.entries(seq, seq)) return e
  return undefined
}

async function scenario (t: Test, rebuild: boolean): Promise<boolean | undefined> {
  const dir = scratchDir(t, 'marker-delete-after-rebuild')
  await Store.create(dir, { sizeBytes: 1024 * B, blockBytes: B, segmentBytes: SEG })
  let s = await Store.open(dir, OPTS)
  await s.snapshot({ name: 'b' })
  await s.snapshot({ name: 'a' })
  for (let i = 0; i < 300; i++) await s.write((i % 64) * B, Buffer.alloc(B, `x${i}`))
  await s.deleteSnapshot('b')
  await s.compact({})
  let del = -1
  for await (const e of s.entries()) if (e.kind === EntryKind.deleteSnapshot) del = e.seq
  await s.close()
  if (rebuild) fs.rmSync(path.join(dir, 'index'), { recursive: true })
  s = await Store.open(dir, OPTS)
  try {
    for (let r = 0; r < 3; r++) {
      for (let i = 0; i < 300; i++) await s.write((i % 64) * B, Buffer.alloc(B, `y${r}.${i}`))
      await s.compact({})
    }
    return (await entryOf(s, del))?.freed
  } finally { await s.close() }
}

t.test('control: without the rebuild the deletion marker goes; with it, it stays for good', async t => {
  t.equal(await scenario(t, false), true, 'no rebuild: freed')
  t.equal(await scenario(t, true), true, 'after a rebuild: freed too')
})

t.test('a deletion marker after a rebuild that forgot its freed snapshot marker', async t => {
  const dir = scratchDir(t, 'marker-delete-after-rebuild')
  await Store.create(dir, { sizeBytes: 1024 * B, blockBytes: B, segmentBytes: SEG })
  let s = await Store.open(dir, OPTS)
  const b = await s.snapshot({ name: 'b' })
  await s.snapshot({ name: 'a' }) // the newest with the highest id stays: 'b' is the one freed
  for (let i = 0; i < 300; i++) await s.write((i % 64) * B, Buffer.alloc(B, `x${i}`)) // seals 'b''s segment
  await s.deleteSnapshot('b') // its marker lands in the current segment: not touched yet
  await s.compact({})
  t.equal((await entryOf(s, b.seq))?.freed, true, 'the pass freed b\'s marker')
  let del = -1
  for await (const e of s.entries()) if (e.kind === EntryKind.deleteSnapshot) del = e.seq
  t.not((await entryOf(s, del))?.freed, true, 'its deletion (in the unsealed segment) stays for now')
  await s.close()

  fs.rmSync(path.join(dir, 'index'), { recursive: true })
  s = await Store.open(dir, OPTS)
  t.teardown(() => s.close().catch(() => undefined))
  t.ok(s.recovery.rebuiltIndex, 'rebuilt')
  for (let r = 0; r < 3; r++) {
    for (let i = 0; i < 300; i++) await s.write((i % 64) * B, Buffer.alloc(B, `y${r}.${i}`))
    await s.compact({})
  }
  t.same(s.snapshots().map(x => x.name), ['a'])
  t.equal((await entryOf(s, del))?.freed, true, 'the deletion marker is freed once its segment is sealed (its snapshot\'s marker is long gone)')
})
