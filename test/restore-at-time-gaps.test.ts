// `--at TIME` where entries have no record: markers compaction freed are gone from an index
// rebuilt since. The bisection counted a missing record as "after the time", so a restore at
// the time of a write returned an older image, silently (a deleted snapshot's freed
// marker in the way), or failed with "the log starts at 1970" (the first write's record
// freed). Found by a hostile test (helper-43); each test fails without the fix.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { Store } from '../src/store'
import { EntryKind } from '../src/store/format'

const MiB = 1024 * 1024
const B = 4096

function tmp (t: { teardown: (fn: () => void) => void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-at-gaps-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return path.join(dir, 's')
}

const block = (v: number): Buffer => Buffer.alloc(B, v)

async function block0At (s: Store, seq: number): Promise<number> {
  for await (const { block: b, data } of s.imageAt(seq)) if (b === 0) return data[0]
  return 0
}

async function rebuilt (dir: string, opts: { historyKeepMs: number }): Promise<Store> {
  fs.rmSync(path.join(dir, 'index'), { recursive: true })
  const s = await Store.open(dir, opts)
  if (!s.recovery.rebuiltIndex) throw new Error('the index was not rebuilt')
  return s
}

t.test('--at the time of each write, after deleted snapshots\' markers were freed and the index rebuilt: that write', async t => {
  const dir = tmp(t)
  await Store.create(dir, { sizeBytes: 8 * MiB, segmentBytes: 2 * MiB })
  const keep = { historyKeepMs: 3_600_000 }
  let s = await Store.open(dir, keep)
  const tick = (): Promise<void> => new Promise(resolve => setTimeout(resolve, 3)) // a time of its own for each entry
  for (let i = 1; i <= 12; i++) {
    await s.write(0, block(i))
    await tick()
    await s.snapshot({ name: `x${i}` })
    await tick()
  }
  await s.write(0, block(99))
  await tick()
  await s.snapshot({ name: 'keep' })
  for (let i = 1; i <= 12; i++) await s.deleteSnapshot(`x${i}`)
  for (let k = 0; k < 3; k++) { await tick(); await s.write(4 * MiB, Buffer.alloc(2 * MiB, k + 1)) } // seals segments
  await s.flush()
  await s.compact()
  await s.close()
  s = await rebuilt(dir, keep)
  t.teardown(() => s.close())
  const writes: Array<{ seq: number, timeMs: number }> = []
  for await (const e of s.entries(1, s.status().index.seq)) if (e.kind === EntryKind.write && e.block === 0) writes.push({ seq: e.seq, timeMs: e.timeMs })
  let gaps = 0
  for (let q = 1; q <= s.status().index.seq; q++) if ((await s.entries(q, q).next()).done === true) gaps++
  t.ok(gaps >= 12, `${gaps} entries have no record after the rebuild (freed markers)`)
  t.equal(writes.length, 13, 'every write of block 0 is still in the log')
  const wrong: string[] = []
  for (const [i, w] of writes.entries()) {
    const point = await s.resolvePoint(new Date(w.timeMs).toISOString())
    const got = await block0At(s, point.seq)
    const want = i === writes.length - 1 ? 99 : i + 1
    if (point.seq < w.seq || got !== want) wrong.push(`write ${w.seq}: sequence ${point.seq}, block 0 = ${got}, not ${want}`)
  }
  t.same(wrong, [], '--at each write\'s time gives the image as that write left it')
})

t.test('--at a time, after the first write\'s record was freed and the index rebuilt: the newest point, not "the log starts at 1970"', async t => {
  const dir = tmp(t)
  await Store.create(dir, { sizeBytes: 8 * MiB, segmentBytes: 2 * MiB })
  const none = { historyKeepMs: 0 }
  let s = await Store.open(dir, none)
  await s.write(0, Buffer.alloc(1 * MiB, 7))
  for (let k = 0; k < 3; k++) await s.write(0, Buffer.alloc(2 * MiB, k + 1))
  await s.flush()
  await s.compact()
  await s.close()
  s = await rebuilt(dir, none)
  t.teardown(() => s.close())
  const seq = s.status().index.seq
  await new Promise(resolve => setTimeout(resolve, 20))
  const point = await s.resolvePoint(new Date().toISOString())
  t.equal(point.seq, seq, 'the newest entry')
  let err: unknown
  try { await s.resolvePoint('2000-01-01T00:00:00Z') } catch (e) { err = e }
  t.match((err as Error)?.message, /is before the first write \(the log starts at 20\d\d-/, 'a time before the log names where it starts')
})
