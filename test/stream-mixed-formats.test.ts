// Formats mixed along a chain: a base received from a format-1 stream (no c2 identity
// remembered) takes a format-2 incremental (its c2 identity walked), and the other way round;
// a format-2 incremental onto a base whose content differs is refused, nothing applied.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { readIdentities } from '../src/copy/identity-cache'
import { receiveStream } from '../src/copy/receive'
import { walkIdentities } from '../src/copy/set-identity'
import { Store } from '../src/store/store'
import { tmpDir } from './helpers/cli'
import { FIXTURES } from './helpers/paths'

const F1 = path.join(FIXTURES, 'stream-1')
const F2 = path.join(FIXTURES, 'stream-2')

t.test('format 1 then format 2 along a chain, and the other way round', { timeout: 60_000 }, async t => {
  const root = tmpDir('stream-mixed')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const want = fs.readFileSync(path.join(F1, 's2.img.sha256'), 'utf8').trim()
  for (const [first, second] of [[F1, F2], [F2, F1]]) {
    const dir = path.join(root, path.basename(first))
    await Store.create(dir, { sizeBytes: 4 << 20, blockBytes: 4096 })
    const { store } = await openStore(dir, { checkpointIntervalMs: 0 })
    try {
      await receiveStream(store, path.join(first, 's1.stream'))
      await receiveStream(store, path.join(second, 's2-from-s1.stream'))
      const img = await store.readSnapshot('s2', 0, store.sizeBytes)
      t.equal(crypto.createHash('sha256').update(img).digest('hex'), want, `${path.basename(first)} then ${path.basename(second)}: s2 is the fixture's image`)
      const seq = store.snapshotNamed('s2').seq
      const kept = readIdentities(store).get(seq)
      if (kept !== undefined) t.equal(kept, (await walkIdentities(store, [seq]))[0], 'a remembered identity is the walk\'s')
    } finally {
      await store.close()
    }
  }
  // A base s1 whose content differs by one block: the format-2 incremental is refused.
  const dir = path.join(root, 'wrong')
  await Store.create(dir, { sizeBytes: 4 << 20, blockBytes: 4096 })
  const { store } = await openStore(dir, { checkpointIntervalMs: 0 })
  try {
    await receiveStream(store, path.join(F1, 's1.stream'))
    await store.deleteSnapshot('s1')
    await store.write(1000 * 4096, Buffer.alloc(4096, 1))
    await store.snapshot({ name: 's1' })
    const before = await store.read(0, store.sizeBytes)
    await t.rejects(receiveStream(store, path.join(F2, 's2-from-s1.stream')), { code: 'BAD_ARGUMENT' }, 'refused: s1 here is not the stream\'s base')
    t.ok((await store.read(0, store.sizeBytes)).equals(before), 'nothing applied')
    t.same(store.snapshots().map(s => s.name), ['s1'])
  } finally {
    await store.close()
  }
})
