// While a receive applies a stream through a daemon, no open may reach current.img: one made
// after the receive checked that nothing had it open wrote under the stream (a hostile test,
// helper-64). ImageFolder.holdImage makes such opens fail with EBUSY until it is released.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { Errno } from '../src/fuse/errno'
import { ImageFolder } from '../src/fuse/image-ops'
import { silentLogger } from '../src/store/logger'
import { Store } from '../src/store/store'

t.test('a held image refuses opens with EBUSY until every hold is released; other images open', async t => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-image-hold-'))
  await Store.create(dir, { sizeBytes: 1 << 20 })
  const store = await Store.open(dir, { checkpointIntervalMs: 0 })
  t.teardown(async () => { await store.close(); fs.rmSync(dir, { recursive: true, force: true }) })
  await store.snapshot({ name: 's' })
  const folder = new ImageFolder(store, silentLogger)
  const errnoOf = (fn: () => unknown): number => { try { fn(); return 0 } catch (err) { return (err as { errno?: number }).errno ?? -999 } }
  const first = folder.holdImage('current.img')
  const second = folder.holdImage('current.img')
  t.equal(errnoOf(() => folder.open('current.img', 2)), Errno.EBUSY, 'held: a write open gets EBUSY')
  t.equal(errnoOf(() => folder.open('current.img', 0)), Errno.EBUSY, 'and a read open')
  t.equal(errnoOf(() => folder.open('s.img', 0)), 0, 'a snapshot image opens')
  first()
  first() // a release counts once
  t.equal(errnoOf(() => folder.open('current.img', 2)), Errno.EBUSY, 'still held by the other hold')
  second()
  t.equal(errnoOf(() => folder.open('current.img', 2)), 0, 'released: it opens')
})
