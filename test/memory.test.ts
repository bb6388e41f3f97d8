// The newest-location map must hold a 1 TiB sparse volume with 10 GiB written in well under
// 1 GiB of RAM, wherever the writes fell (the foundation issue's bound).
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { BlockMap } from '../src/store/block-map'
import { Store } from '../src/store'

const GiB = 1024 ** 3

t.test('10 GiB of 4 KiB blocks scattered over 1 TiB fit the block map in under 256 MiB', async t => {
  const blocks = (10 * GiB) / 4096 // 2,621,440
  const volumeBlocks = (1024 * GiB) / 4096 // 2^28
  const map = new BlockMap()
  const heapBefore = process.memoryUsage().heapUsed
  let x = 12345
  for (let i = 0; i < blocks; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0
    const block = (x * 7919 + i) % volumeBlocks // scattered, a few collisions at most
    map.set(block, i * 4160, x, i + 1)
  }
  const heapAfter = process.memoryUsage().heapUsed
  t.ok(map.count > blocks * 0.99, `${map.count} distinct blocks mapped`)
  t.ok(map.memoryBytes < 256 * 1024 ** 2, `block map: ${(map.memoryBytes / 1024 ** 2).toFixed(0)} MiB (${(map.memoryBytes / map.count).toFixed(1)} bytes per block)`)
  t.ok(heapAfter - heapBefore < 64 * 1024 ** 2, `JS heap grew ${((heapAfter - heapBefore) / 1024 ** 2).toFixed(1)} MiB: no object per block`)
})

t.test('a 1 TiB store opens, takes scattered writes and reads them back', async t => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-tib-'))
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const dir = path.join(root, 'store')
  await Store.create(dir, { sizeBytes: 1024 * GiB })
  const store = await Store.open(dir)
  const offsets: number[] = []
  for (let i = 0; i < 2000; i++) {
    const off = Math.floor(((i * 2654435761) % 268435456)) * 4096
    offsets.push(off)
    await store.write(off, Buffer.alloc(4096, (i % 250) + 1))
  }
  const s = store.status()
  t.equal(s.sizeBytes, 1024 * GiB)
  t.ok(s.mapMemoryBytes / 2000 < 200, `map memory per written block: ${(s.mapMemoryBytes / 2000).toFixed(0)} bytes (table at 70% load at most)`)
  for (let i = 0; i < 2000; i += 97) t.ok((await store.read(offsets[i], 4096)).equals(Buffer.alloc(4096, (i % 250) + 1)), `block at ${offsets[i]}`)
  t.ok((await store.read(512 * GiB + 4096 * 3, 4096)).equals(Buffer.alloc(4096)), 'a never-written block reads as zeros')
  await store.close()
})
