// A resize while a receive or a send runs: the identities they computed are of the geometry
// they started with; one remembered must not be taken for the new geometry's (a later
// incremental onto that snapshot would then be refused as another base, or worse).
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { readIdentities } from '../src/copy/identity-cache'
import { receiveStream } from '../src/copy/receive'
import { sendStreamTo } from '../src/copy/send'
import { walkIdentities } from '../src/copy/set-identity'
import { Store } from '../src/store/store'
import { tmpDir } from './helpers/cli'
import { cutAndSend, newStreamStore } from './helpers/stream-stores'

const B = 4096
const SIZE = 4 << 20

const newStore = (root: string, name: string): Promise<Store> => newStreamStore(root, name, SIZE)

/** Every remembered identity equals a walk at the store's geometry now. */
async function rememberedAreTrue (t: Test, s: Store, what: string): Promise<void> {
  for (const [seq, identity] of readIdentities(s)) {
    t.equal(identity, (await walkIdentities(s, [seq]))[0], `${what}: the remembered identity of cut ${seq} is the walk's at ${s.sizeBytes} bytes`)
  }
}

t.test('a volume grown during a receive or a send keeps no identity of the old geometry', { timeout: 60_000 }, async t => {
  const root = tmpDir('identity-resize-race')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const src = await newStore(root, 'src')
  const dst = await newStore(root, 'dst')
  try {
    await src.write(0, crypto.randomBytes(4 * B))
    await cutAndSend(src, root, 'a')
    await src.write(20 * B, crypto.randomBytes(B))
    await cutAndSend(src, root, 'b', 'a')
    await receiveStream(dst, path.join(root, 'a.stream'))

    // The receiver is asked to grow while the stream applies (its flush is after the last
    // write): refused since 2026-12-07 (a receive holds the size: resize-holds.test.ts); the
    // receive goes on, and what it remembers is of the size it has.
    const flush = dst.flush.bind(dst)
    let grown: unknown
    dst.flush = async () => {
      if (grown === undefined) grown = await dst.resize(2 * SIZE).then(r => r, (err: unknown) => err)
      return await flush()
    }
    const r = await receiveStream(dst, path.join(root, 'ab.stream')).then(() => undefined, (err: unknown) => err)
    dst.flush = flush
    t.match(grown, { code: 'BUSY' }, 'the grow is refused while the stream applies')
    t.equal(dst.sizeBytes, SIZE, 'not grown')
    t.equal(r, undefined, 'the receive goes through')
    t.same(dst.snapshots().map(s => s.name), ['a', 'b'], 'snapshot b cut')
    await dst.resize(2 * SIZE)
    await rememberedAreTrue(t, dst, 'receiver')

    // The sender grows while a stream is written (after the identities were computed).
    await src.write(30 * B, crypto.randomBytes(B))
    await src.snapshot({ name: 'c' })
    fs.rmSync(path.join(src.dir, 'identities'), { force: true })
    let grew = false
    await sendStreamTo(src, 'c', 'b', { out: path.join(root, 'bc.stream') }, {
      onProgress: () => { if (!grew) { grew = true; void src.resize(2 * SIZE) } }
    })
    await new Promise(resolve => setTimeout(resolve, 50))
    t.equal(src.sizeBytes, 2 * SIZE, 'grown')
    await rememberedAreTrue(t, src, 'sender')
    // Sent again at the new size: remembered, and true.
    await sendStreamTo(src, 'c', 'b', { out: path.join(root, 'bc.stream'), force: true })
    t.equal(readIdentities(src).size, 2, 'b and c remembered at the new size')
    await rememberedAreTrue(t, src, 'sender, sent again')
  } finally {
    await src.close()
    await dst.close()
  }
})
