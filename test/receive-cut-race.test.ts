// A write that lands after receive computed the applied volume's identity and before the cut:
// the snapshot must not be cut with it (it would be named like the stream's snapshot but not
// read as it). Receive checks what changed between the checked point and the cut.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { readIdentities } from '../src/copy/identity-cache'
import { receiveStream } from '../src/copy/receive'
import { walkIdentities } from '../src/copy/set-identity'
import { Store } from '../src/store/store'
import { tmpDir } from './helpers/cli'
import { cutAndSend, newStreamStore } from './helpers/stream-stores'

const B = 4096
const SIZE = 4 << 20

const newStore = (root: string, name: string): Promise<Store> => newStreamStore(root, name, SIZE)

for (const kind of ['incremental', 'full', 'marker'] as const) {
  t.test(`${kind}: a write between the identity check and the cut is not in a cut snapshot`, { timeout: 60_000 }, async t => {
    const root = tmpDir('receive-cut-race')
    t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
    const src = await newStore(root, 'src')
    const dst = await newStore(root, 'dst')
    try {
      await src.write(0, crypto.randomBytes(3 * B))
      await cutAndSend(src, root, 'a')
      await src.write(60 * B, crypto.randomBytes(B))
      await cutAndSend(src, root, 'b', 'a')
      const target = kind === 'full' ? 'a' : 'b'
      const want = await src.readSnapshot(target, 0, SIZE)
      if (kind !== 'full') await receiveStream(dst, path.join(root, 'a.stream'))
      // As a writer on the mounted store would: block 70 changes right before the cut.
      const snapshot = dst.snapshot.bind(dst)
      dst.snapshot = async (opts) => {
        if (kind === 'marker') await dst.syncPoint('meanwhile') // changes no block
        else await dst.write(70 * B, Buffer.alloc(B, 7))
        return await snapshot(opts)
      }
      const r = await receiveStream(dst, path.join(root, kind === 'full' ? 'a.stream' : 'ab.stream')).then(() => undefined, (err: unknown) => err)
      dst.snapshot = snapshot
      if (dst.snapshots().some(s => s.name === target)) {
        t.ok((await dst.readSnapshot(target, 0, SIZE)).equals(want), `a cut ${target} reads as the sender's ${target}`)
        const seq = dst.snapshotNamed(target).seq
        const kept = readIdentities(dst).get(seq)
        if (kept !== undefined) t.equal(kept, (await walkIdentities(dst, [seq]))[0], 'a remembered identity is the walk\'s')
      } else {
        t.match(r, { code: 'CORRUPT' }, 'refused as CORRUPT')
      }
      if (kind === 'marker') {
        t.error(r, 'a marker in between: received')
        t.ok(readIdentities(dst).has(dst.snapshotNamed(target).seq), 'and its identity remembered')
      } else {
        t.ok((await dst.read(70 * B, B)).equals(Buffer.alloc(B, 7)), 'the writer\'s block is kept in the current volume')
      }
    } finally {
      await src.close()
      await dst.close()
    }
  })
}
