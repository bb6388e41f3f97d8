// A receiver could not follow its sender across a shrink (helper-77): the sender discards its
// tail, drops the snapshots that held data there, compacts and shrinks, so its next incremental
// is of the smaller volume. The receiver got the discard as zero records, which it applied as
// writes of zeros, and its resize refused the shrink (the base snapshot "wrote" the tail) even
// after it dropped every other snapshot and compacted: the chain of incrementals was broken for
// good. Zero records are trims on the receiver now (receive.ts), so it shrinks as the sender did.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { receiveStream } from '../src/copy/receive'
import { Store } from '../src/store/store'
import { tmpDir } from './helpers/cli'
import { cutAndSend } from './helpers/stream-stores'

const B = 4096
const BIG = 12 << 20
const SMALL = 8 << 20

async function open (root: string, name: string): Promise<Store> {
  const dir = path.join(root, name)
  await Store.create(dir, { sizeBytes: BIG, blockBytes: B })
  return (await openStore(dir, { checkpointIntervalMs: 0, historyKeepMs: 0 })).store
}

const sha = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex')

t.test('a receiver follows its sender across a discard of the tail and a shrink', async t => {
  const root = tmpDir('h77-receive-shrink')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const src = await open(root, 'src')
  const dst = await open(root, 'dst')
  try {
    await src.write(0, crypto.randomBytes(16 * B))
    await src.write(SMALL + B, crypto.randomBytes(8 * B)) // data past the later end
    await src.flush()
    await cutAndSend(src, root, 'a')
    await src.discard(SMALL, BIG - SMALL) // the whole tail
    await src.flush()
    await cutAndSend(src, root, 'b', 'a')
    await receiveStream(dst, path.join(root, 'a.stream'))
    await receiveStream(dst, path.join(root, 'ab.stream'))
    t.equal(sha(await dst.readSnapshot('b', 0, BIG)), sha(await src.readSnapshot('b', 0, BIG)), 'b received byte for byte')

    // The sender drops a, compacts and shrinks: b reads only zeros past the new end.
    await src.deleteSnapshot('a')
    await src.compact()
    await src.resize(SMALL)
    await src.write(0, crypto.randomBytes(B))
    await src.flush()
    await cutAndSend(src, root, 'c', 'b')

    // The receiver does the same.
    await dst.deleteSnapshot('a')
    await dst.compact()
    await dst.compactIntoBaseline()
    const shrunk = await dst.resize(SMALL).then(() => 'ok', (err: Error) => err.message)
    t.equal(shrunk, 'ok', 'the receiver shrinks as the sender did (its snapshot b holds only zeros past the end)')
    const got = await receiveStream(dst, path.join(root, 'bc.stream')).then(() => 'ok', (err: Error) => err.message)
    t.equal(got, 'ok', 'and receives the next increment')
    if (got === 'ok') t.equal(sha(await dst.readSnapshot('c', 0, SMALL)), sha(await src.readSnapshot('c', 0, SMALL)), 'c byte for byte')
  } finally {
    await src.close()
    await dst.close()
  }
})
