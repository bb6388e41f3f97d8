// A pool full of dead versions failed writes with ENOSPC until the next policy tick (2 s)
// compacted it: a writer of fsync'd 1 MiB overwrites on an 8 MiB image with history.keep=0 got
// ENOSPC for one write in seven, and an ext4 above turned them into EIO and could not be
// mounted again while the pool stayed full (a hostile test, helper-75's D6). Now a write that
// finds no room asks the policy engine (Store.setNoSpaceHandler -> relieveNoSpace), which
// compacts at once, and the write is tried once more. A pool full of what snapshots hold still
// refuses, at once: a compaction that freed nothing is not run again for every write.
import t from 'tap'
import { isLogdiskError } from '../src/errors'
import { PolicyEngine } from '../src/policy/engine'
import { applyAssignments, defaultPolicy } from '../src/policy/policy'
import { crc32c } from '../src/store/crc'
import { B, CAPACITY_SEGMENTS, SEGMENT, fullPoolRig, writeBlock, type PoolRig } from './helpers/full-pool-rig'
import type { Store } from '../src/store/store'

const BLOCKS = 64

/** A policy engine over the rig's store, as the mount daemon makes one; counts its compactions. */
function engineFor (r: PoolRig, store: Store): { engine: PolicyEngine, compactions: () => number, warned: string[] } {
  const warned: string[] = []
  const log = { info () {}, warn: (_f: object, msg: string) => { warned.push(msg) }, error () {} }
  const policy = applyAssignments(defaultPolicy(), ['history.keep=0'])
  const engine = new PolicyEngine(store, undefined, log, r.sched.clock, () => policy)
  let compactions = 0
  const compact = store.compact.bind(store)
  store.compact = async (...args) => { compactions++; return await compact(...args) }
  store.setNoSpaceHandler(() => engine.relieveNoSpace())
  return { engine, compactions: () => compactions, warned }
}

t.test('overwrites of a small image never run out of room in a small pool: a write that finds it full compacts first', { timeout: 120_000 }, async t => {
  // Without the engine first: the same writes do run out of room.
  const bare = await fullPoolRig(t, 'full-pool-compacts-bare', 7, 1, BLOCKS)
  const plain = await bare.drive(bare.open())
  let refused = -1
  for (let i = 0; i < 20 * CAPACITY_SEGMENTS * (SEGMENT / B) && refused < 0; i++) if (!await writeBlock(bare, plain, i % BLOCKS)) refused = i
  t.ok(refused > 0, `with no one compacting, write ${refused} gets NO_SPACE`)
  await bare.drive(plain.close())

  const r = await fullPoolRig(t, 'full-pool-compacts', 7, 1, BLOCKS)
  const store = await r.drive(r.open())
  const { compactions } = engineFor(r, store)
  const writes = 20 * CAPACITY_SEGMENTS * (SEGMENT / B)
  let failed = 0
  for (let i = 0; i < writes; i++) if (!await writeBlock(r, store, i % BLOCKS)) failed++
  t.equal(failed, 0, `${writes} overwrites (the pool's capacity ${20}x over), none refused`)
  t.ok(compactions() > 0, `the writes that found the pool full compacted it (${compactions()} runs)`)
  const image = await r.drive(store.read(0, BLOCKS * B))
  t.equal(crc32c(image), crc32c(r.model), 'the image reads as written')
  await r.drive(store.flush())
  await r.drive(store.close())
  const again = await r.drive(r.open())
  t.ok((await r.drive(again.read(0, BLOCKS * B))).equals(r.model), 'and again after a reopen')
  await r.drive(again.close())
})

t.test('a pool full of what a snapshot holds refuses writes at once, with one compaction, not one per write', { timeout: 120_000 }, async t => {
  const r = await fullPoolRig(t, 'full-pool-compacts-held', 8, 1, BLOCKS)
  const store = await r.drive(r.open())
  const { compactions, warned } = engineFor(r, store)
  // Every version is held: a snapshot after each pass over the image.
  let refusedAt = -1
  for (let i = 0; refusedAt < 0 && i < 20 * CAPACITY_SEGMENTS * (SEGMENT / B); i++) {
    if (!await writeBlock(r, store, i % BLOCKS)) refusedAt = i
    else if (i % BLOCKS === BLOCKS - 1) await r.drive(store.snapshot({ name: `s${i}` }))
  }
  t.ok(refusedAt > 0, `write ${refusedAt} is refused`)
  const runs = compactions()
  t.ok(runs >= 1, `after a compaction that could free nothing (${runs})`)
  for (let i = 0; i < 5; i++) t.notOk(await writeBlock(r, store, i), `the next write ${i} is refused too`)
  t.equal(compactions(), runs, 'at once: no compaction ran again for them')
  t.ok(warned.some(m => /freed nothing/.test(m)), 'the daemon log says why')
  const err = await r.drive(store.write(0, Buffer.alloc(B, 1))).then(() => undefined, e => e)
  t.ok(isLogdiskError(err, 'NO_SPACE'), 'the error is still NO_SPACE')
  // Once the snapshots go and the 10 s are past, the next write makes room for itself.
  for (const snap of store.snapshots()) await r.drive(store.deleteSnapshot(snap.name))
  r.sched.nowMs += 11_000
  t.ok(await writeBlock(r, store, 0), 'with the snapshots deleted, a write compacts and goes in')
  t.equal(compactions(), runs + 1, 'with one more compaction')
  await r.drive(store.close())
})
