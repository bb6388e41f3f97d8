// The index write guard's reopen (index-write-guard.ts) against a made-up database whose
// background error and failed open are set by hand: a reopen whose open failed (the room gone
// again) left the database closed, and every read said "Database is not open" for good
// (helper-99, seen in helper-97's c-enospc.sh WHOLE=1 22); and a write that ran across a reopen
// may lie behind a torn record, so it must not be acknowledged.
import t from 'tap'
import type { AbstractLevel } from 'abstract-level'
import { IndexWriteGuard } from '../src/store/index-write-guard'

class FakeDb {
  status = 'open'
  /** LevelDB's kept background error: every write fails until a reopen. */
  stuck = false
  /** Opens that fail before one succeeds. */
  failOpens = 0
  opens = 0
  async compactRange (): Promise<void> {}
  async batch (): Promise<void> {
    if (this.status !== 'open') throw new Error('Database is not open')
    if (this.stuck) throw new Error('IO error: 000005.ldb: No space left on device')
  }

  async close (): Promise<void> { this.status = 'closed' }
  async open (): Promise<void> {
    if (this.failOpens > 0) { this.failOpens--; throw new Error('IO error: MANIFEST-000007: No space left on device') }
    this.opens++
    this.stuck = false
    this.status = 'open'
  }
}

const guardOf = (db: FakeDb): IndexWriteGuard => new IndexWriteGuard(db as unknown as AbstractLevel<Buffer, Buffer, Buffer>)

t.test('a kept background error is cleared by a reopen; a reopen that failed is tried again by the next read', async t => {
  const db = new FakeDb()
  const guard = guardOf(db)
  db.stuck = true
  await t.rejects(guard.run(() => db.batch()), /000005\.ldb/, 'a write fails with the kept error')
  db.failOpens = 1
  await t.rejects(guard.run(() => db.batch()), { code: 'NO_SPACE' }, 'the reopen\'s open fails: NO_SPACE')
  t.equal(db.status, 'closed', 'the database was left closed')
  await guard.ready()
  t.equal(db.status, 'open', 'the next read opened it again')
  await guard.run(() => db.batch())
  t.pass('writes succeed again')
  t.equal(db.opens, 1)
})

t.test('a write that ran across a reopen is not acknowledged', async t => {
  const db = new FakeDb()
  const guard = guardOf(db)
  let release!: () => void
  const held = new Promise<void>(resolve => { release = resolve })
  // A write under way (it reached LevelDB before the failure, and completes after it).
  const slow = guard.run(async () => { await held })
  db.stuck = true
  await t.rejects(guard.run(() => db.batch()), /000005\.ldb/)
  const next = guard.run(() => db.batch()) // flushes: the probe fails, the database is reopened
  release()
  await t.rejects(slow, /was reopened after a failed write while this write ran/, 'the slow write fails')
  await next.catch(() => undefined)
  t.equal(db.opens, 1, 'reopened once')
  await guard.run(() => db.batch())
  t.pass('later writes succeed')
})
