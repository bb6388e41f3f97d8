// A small stream is read once by receive: validateStream checks it and keeps its records
// (keepBytes), and they are what is applied. The kept records equal those a second read of
// the file gives (blocks, data, per-block CRCs); a file over the bound keeps none; a receive
// from kept records and one that reads the file again make the same snapshot, byte for byte;
// a corrupt small stream is still refused whole, with nothing applied.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { receiveStream } from '../src/copy/receive'
import { readStream, validateStream, type StreamRecord } from '../src/copy/stream-format'
import { Store } from '../src/store/store'
import { tmpDir } from './helpers/cli'
import { cutAndSend, newStreamStore } from './helpers/stream-stores'

const B = 4096
const SIZE = 8 << 20

async function writeBlocks (s: Store, blocks: number[]): Promise<void> {
  for (const b of blocks) await s.write(b * B, crypto.randomBytes(B))
  await s.flush()
}

const sha = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex')
const view = (r: StreamRecord): unknown => r.type === 'data'
  ? { type: r.type, block: r.block, count: r.count, data: sha(r.data), crcs: [...(r.crcs ?? [])] }
  : { type: r.type, block: r.block, count: r.count }

t.test('validateStream keeps a small stream\'s records as a second read gives them; receive applies them', async t => {
  const root = tmpDir('receive-kept')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const src = await newStreamStore(root, 'src', SIZE)
  try {
    await writeBlocks(src, [0, 1, 2, 3, 9, 100, 101, 1500, 2000])
    await cutAndSend(src, root, 'a')
    await writeBlocks(src, [1, 5, 6, 7, 2000, 1999])
    await src.discard(100 * B, 2 * B)
    await cutAndSend(src, root, 'b', 'a')
    for (const name of ['a.stream', 'ab.stream']) {
      const file = path.join(root, name)
      const kept = await validateStream(file, undefined, { keepBytes: fs.statSync(file).size })
      const again: unknown[] = []
      for await (const r of readStream(file, { blockCrcs: true })) if (!('header' in r) && !('trailer' in r)) again.push(view(r))
      t.ok(kept.records, `${name}: records kept`)
      t.same(kept.records!.map(view), again, `${name}: the kept records are those a second read gives, with the same block CRCs`)
      t.ok(kept.records!.every(r => r.type !== 'data' || r.crcs?.length === r.count), `${name}: every data record has its blocks' CRCs`)
      t.ok(again.some(r => (r as { type: string }).type === 'zero') || name === 'a.stream', `${name}: zero records too`)
      t.equal((await validateStream(file, undefined, { keepBytes: fs.statSync(file).size - 1 })).records, undefined, `${name}: a file over the bound keeps none`)
      t.equal((await validateStream(file)).records, undefined, `${name}: none unless asked`)
    }

    // The same snapshot whether the records were kept or the file read again.
    const images: string[] = []
    for (const keepStreamBytes of [undefined, 0]) {
      const dst = await newStreamStore(root, `dst-${keepStreamBytes ?? 'kept'}`, SIZE)
      try {
        await receiveStream(dst, path.join(root, 'a.stream'), { keepStreamBytes })
        const r = await receiveStream(dst, path.join(root, 'ab.stream'), { keepStreamBytes })
        t.equal(r.identity, (await validateStream(path.join(root, 'ab.stream'))).header.snapshot.identity, `received b (keepStreamBytes ${keepStreamBytes ?? 'default'}) with the stream's identity`)
        images.push(sha(await dst.readSnapshot('b', 0, SIZE)))
      } finally {
        await dst.close()
      }
    }
    t.equal(images[0], sha(await src.readSnapshot('b', 0, SIZE)), 'kept records: b byte for byte')
    t.equal(images[1], images[0], 'read again: the same image')

    // A small stream with one byte changed in its last data record: refused whole, nothing applied.
    const bad = path.join(root, 'bad.stream')
    const bytes = fs.readFileSync(path.join(root, 'ab.stream'))
    bytes[bytes.length - 200] ^= 0xff
    fs.writeFileSync(bad, bytes)
    const dst = await newStreamStore(root, 'dst-bad', SIZE)
    try {
      await receiveStream(dst, path.join(root, 'a.stream'))
      const before = sha(await dst.read(0, SIZE))
      const seq = dst.status().index.seq
      await t.rejects(receiveStream(dst, bad), { code: 'CORRUPT' }, 'a corrupt small stream is refused')
      t.equal(sha(await dst.read(0, SIZE)), before, 'the current volume is unchanged')
      t.equal(dst.status().index.seq, seq, 'nothing was written')
      t.same(dst.snapshots().map(s => s.name), ['a'], 'no snapshot was cut')
    } finally {
      await dst.close()
    }
  } finally {
    await src.close()
  }
})
