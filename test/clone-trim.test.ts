// TRIM of a clone (src/clone): a block the clone never wrote reads from its parent's snapshot,
// so a discard (punch-hole) must give it a trim entry too, or it still reads the parent's data
// after the discard (and promote copies that data in).
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { makeClone, parentOf, promote } from '../src/clone/clone'
import { Store } from '../src/store/store'
import { tmpDir } from './helpers/cli'

const B = 4096
const SIZE = 4 << 20

t.test('a discard on a clone zeroes blocks it reads from its parent, also after reopen and promote', { timeout: 60_000 }, async t => {
  const root = tmpDir('clone-trim')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const parentDir = path.join(root, 'parent')
  await Store.create(parentDir, { sizeBytes: SIZE, blockBytes: B })
  const { store: parent } = await openStore(parentDir, { checkpointIntervalMs: 0 })
  const data = crypto.randomBytes(8 * B)
  await parent.write(0, data)
  const s0 = await parent.snapshot({ name: 's0' })
  await parent.close()
  const cloneDir = path.join(root, 'clone')
  await makeClone(parentDir, { name: s0.name, seq: s0.seq }, cloneDir)

  let { store: clone } = await openStore(cloneDir, { checkpointIntervalMs: 0 })
  try {
    await clone.write(2 * B, Buffer.alloc(B, 9)) // one block of its own inside the range
    await clone.discard(B, 4 * B) // blocks 1-4
    await clone.discard(6 * B + 100, 200) // inside block 6: written as zeros
    const want = Buffer.from(data)
    want.fill(0, B, 5 * B)
    want.fill(0, 6 * B + 100, 6 * B + 300)
    t.ok((await clone.read(0, 8 * B)).equals(want), 'discarded blocks read as zeros, the others as the parent\'s')
    await clone.close()
    ;({ store: clone } = await openStore(cloneDir, { checkpointIntervalMs: 0 }))
    t.ok((await clone.read(0, 8 * B)).equals(want), 'after reopening too')
    const { record, parent: p } = parentOf(clone)!
    await promote(clone, record, p)
    t.ok((await clone.read(0, 8 * B)).equals(want), 'after promote too')
  } finally {
    await clone.close()
  }
  const { store: alone } = await openStore(cloneDir)
  try {
    t.ok((await alone.read(B, 4 * B)).equals(Buffer.alloc(4 * B)), 'the promoted store reads zeros there on its own')
  } finally {
    await alone.close()
  }
})
