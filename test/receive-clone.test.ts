// Receive onto a clone (src/clone): a clone's blocks it never wrote read from its parent's
// snapshot, but content identities (c1 walk, c2 walk and carry) and the "nothing written since
// the base" / "empty store" checks see only the clone's own log. So a base on a clone that reads
// parent data looks like an empty image, and a stream whose base is really empty was applied
// onto it: the snapshot cut on the clone then read the parent's data where the sender's had
// zeros. Receive must refuse a clone (as send, export, diff and restore do), changing nothing.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { makeClone } from '../src/clone/clone'
import { receiveStream } from '../src/copy/receive'
import { sendStreamTo } from '../src/copy/send'
import { isLogdiskError } from '../src/errors'
import { Store } from '../src/store/store'
import { tmpDir } from './helpers/cli'

const B = 4096
const SIZE = 4 << 20

t.test('receive onto a clone is refused: its base reads parent data the identity does not see', { timeout: 60_000 }, async t => {
  const root = tmpDir('receive-clone')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  // Parent: block 0 holds data at snapshot s0; the clone reads it through.
  const parentDir = path.join(root, 'parent')
  await Store.create(parentDir, { sizeBytes: SIZE, blockBytes: B })
  let { store: parent } = await openStore(parentDir, { checkpointIntervalMs: 0 })
  await parent.write(0, crypto.randomBytes(B))
  const s0 = await parent.snapshot({ name: 's0' })
  await parent.close()
  const cloneDir = path.join(root, 'clone')
  await makeClone(parentDir, { name: s0.name, seq: s0.seq }, cloneDir)
  const clone2Dir = path.join(root, 'clone2')
  await makeClone(parentDir, { name: s0.name, seq: s0.seq }, clone2Dir)

  // Sender: 'a' is all zeros, 'b' has block 5.
  await Store.create(path.join(root, 'src'), { sizeBytes: SIZE, blockBytes: B })
  const { store: src } = await openStore(path.join(root, 'src'), { checkpointIntervalMs: 0 })
  await src.snapshot({ name: 'a' })
  await src.write(5 * B, crypto.randomBytes(B))
  await src.snapshot({ name: 'b' })
  await sendStreamTo(src, 'a', undefined, { out: path.join(root, 'a.stream') })
  await sendStreamTo(src, 'b', 'a', { out: path.join(root, 'ab.stream') })
  const srcB = await src.readSnapshot('b', 0, SIZE)
  await src.close()

  const { store: clone } = await openStore(cloneDir, { checkpointIntervalMs: 0 })
  try {
    t.not((await clone.read(0, B)).equals(Buffer.alloc(B)), 'the clone reads its parent\'s block 0')
    // A full stream: the clone is not empty (it reads the parent), whatever its own log says.
    const full = await receiveStream(clone, path.join(root, 'a.stream')).then(() => undefined, (err: unknown) => err)
    t.ok(isLogdiskError(full, 'BAD_ARGUMENT'), `full stream refused with BAD_ARGUMENT (got ${String(full)})`)
    t.same(clone.snapshots().map(s => s.name), [], 'no snapshot cut')
  } finally {
    await clone.close()
  }
  const { store: clone2 } = await openStore(clone2Dir, { checkpointIntervalMs: 0 })
  try {
    // An incremental onto a base cut on the clone: its image is the parent's block 0, not zeros.
    const clone = clone2
    await clone.snapshot({ name: 'a' })
    const inc = await receiveStream(clone, path.join(root, 'ab.stream')).then(() => undefined, (err: unknown) => err)
    t.ok(isLogdiskError(inc, 'BAD_ARGUMENT'), `incremental refused with BAD_ARGUMENT (got ${String(inc)})`)
    if (clone.snapshots().some(s => s.name === 'b')) {
      t.ok((await clone.readSnapshot('b', 0, SIZE)).equals(srcB), 'a received b would have to read as the sender\'s b')
    }
    t.same(clone.snapshots().map(s => s.name), ['a'], 'no snapshot b cut')
    t.ok((await clone.read(5 * B, B)).equals(Buffer.alloc(B)), 'nothing applied')
  } finally {
    await clone2.close()
  }
  ;({ store: parent } = await openStore(parentDir))
  await parent.close()
})
