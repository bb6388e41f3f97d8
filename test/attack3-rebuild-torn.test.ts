import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { segmentFileName } from '../src/store/format'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { SimFileLayer } from '../src/testing/sim-file-layer'

/**
 * A full rebuild (the index lost with the power) after a power loss that tore the last write
 * of the current segment, while the next segment had been made ahead (next-segment.ts: from
 * half full on, an empty segment past the current one is there). The torn entry is the end of
 * the log, as it would be without the empty segment after it: it must be cut, and the flushed
 * version of its block must read back, not an I/O error.
 */
const B = 4096
const SIZE = 4 * 1024 * 1024
const SEGMENT = 1024 * 1024 + 64 * 1024
const HEADER = 4096

function tmpDir (t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'attack3-rebuild-torn-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

for (const kind of ['data page lost', 'last page lost']) {
  t.test(`torn last write (${kind}) with an empty segment made ahead after it, index lost: the flushed version reads back`, async t => {
    const dir = tmpDir(t)
    const sim = new SimFileLayer()
    await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT }, sim)
    const open = (): Promise<Store> => Store.open(dir, { fileLayer: sim, checkpointIntervalMs: 0 })
    const store = await open()
    const rng = new Rng(0x7042)
    const model = Buffer.alloc(SIZE)
    const X = 7 // the block whose flushed version must survive
    const v1 = rng.bytes(B)
    await store.write(X * B, v1)
    v1.copy(model, X * B)
    while (store.status().index.position % SEGMENT < 0.6 * SEGMENT) {
      const data = rng.bytes(16 * B)
      const offset = (100 + rng.int(SIZE / B - 116)) * B
      await store.write(offset, data)
      data.copy(model, offset)
    }
    await store.flush()
    const seg1 = path.join(dir, 'segments', segmentFileName(1))
    for (let i = 0; i < 2000 && (sim.readFile(seg1)?.length ?? 0) < HEADER; i++) await new Promise(resolve => setImmediate(resolve))
    t.ok((sim.readFile(seg1)?.length ?? 0) >= HEADER, 'segment 1 was made ahead')
    // The last write, never flushed: the power fails before its pages are all on disk.
    const start = store.status().index.position % SEGMENT
    await store.write(X * B, rng.bytes(B))
    const end = store.status().index.position % SEGMENT
    await store.abandon()
    // What the page cache had written back: the header's page, not the page the entry ends in.
    const seg0 = path.join(dir, 'segments', segmentFileName(0))
    const lastPage = Math.floor((end - 1) / 4096) * 4096
    const from = kind === 'data page lost' ? Math.max(lastPage, start + 68) : lastPage
    sim.poke(seg0, from, Buffer.alloc(end - from))
    sim.crash(rng) // nothing unsynced is left to lose but the page above
    fs.rmSync(path.join(dir, 'index'), { recursive: true, force: true })
    fs.mkdirSync(path.join(dir, 'index'))
    const again = await open()
    t.ok(again.recovery.rebuiltIndex, 'the index was rebuilt from the log')
    t.same(again.recovery.damaged, [], 'a torn tail is not damage')
    let got: Buffer | undefined
    try {
      got = await again.read(X * B, B)
    } catch (err) {
      t.fail(`reading block ${X} failed: ${(err as Error).message}`)
    }
    if (got) t.ok(got.equals(v1), `block ${X} reads its flushed version`)
    const rest = await again.read(100 * B, SIZE - 100 * B)
    t.ok(rest.equals(model.subarray(100 * B)), 'every other flushed byte reads back')
    t.ok((await again.verify()).ok, 'verify clean')
    await again.close()
  })
}
