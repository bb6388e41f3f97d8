// The parts of an open store, each against stub neighbours (docs/ARCHITECTURE.md): the
// segment table is the one writer of segment records, the index writer never loses a batch
// whose commit failed, and a pass fence admits only what pass-fence.ts says.
import t from 'tap'
import { IndexBatch, type Checkpoint, type SegmentRecord } from '../src/store/index-db'
import { IndexWriter } from '../src/store/index-writer'
import { PassFence } from '../src/store/pass-fence'
import type { StoreParts } from '../src/store/parts'
import { ReadEpochs } from '../src/store/read-epochs'
import { SegmentTable } from '../src/store/segment-table'
import { silentLogger } from '../src/store/logger'

/** StoreParts with only what the part under test uses; the rest throws if touched. */
function stubParts (fill: Record<string, unknown>): StoreParts {
  return new Proxy(fill, {
    get (target, key) {
      if (key in target) return target[key as string]
      throw new Error(`the part under test used StoreParts.${String(key)}`)
    }
  }) as unknown as StoreParts
}

t.test('SegmentTable: every record is built whole from the table, so no field is lost', async t => {
  const index = { batch: new IndexBatch() }
  const p = stubParts({ index, logger: silentLogger })
  const table = new SegmentTable(p, [1, 2], new Map([[1, ['a']], [2, ['a', 'b']]]), new Map([[1, 'active'], [2, 'current']]), new Set(), 0)
  table.markArchived(1)
  table.setState(1, 'inactive')
  table.record(1)
  t.same(index.batch.segments.get(1), { state: 'inactive', volumes: ['a'], archived: true }, 'a state change keeps the archived flag')
  table.forgetVolumes(1)
  table.setState(1, 'archived')
  table.record(1)
  t.same(index.batch.segments.get(1), { state: 'archived', volumes: [], archived: true })
  table.forgetState(1)
  table.record(1)
  t.equal(index.batch.segments.get(1)?.state, 'recycled', 'a segment without a state is recorded as recycled')
  table.ids = table.ids.filter(id => id !== 1)
  table.recycledCount++
  t.same(table.countByState(), { current: 1, active: 0, inactive: 0, archived: 0, recycled: 1 })
})

t.test('SegmentTable: a dropped copy is recorded durably by recordDrops, and again after a failure', async t => {
  const index = { batch: new IndexBatch() }
  const puts: Array<Map<number, SegmentRecord>> = []
  let fail = true
  const db = {
    async putSegments (records: Map<number, SegmentRecord>) {
      if (fail) throw new Error('injected: putSegments failed')
      puts.push(records)
    }
  }
  // The removal of the stale file is queued under the maintenance lock once the record is durable.
  const removals: Array<() => Promise<void>> = []
  const lifeCycle = { maintenance: { run: async (fn: () => Promise<void>) => { removals.push(fn) } } }
  const p = stubParts({ index, db, logger: silentLogger, lifeCycle, opts: {} })
  const table = new SegmentTable(p, [3], new Map([[3, ['a', 'b']]]), new Map([[3, 'current']]), new Set(), 0)
  table.copyDropped(3, 'b')
  table.copyDropped(3, 'c') // not a copy it has: nothing changes
  t.same(table.volumesOf(3), ['a'])
  t.same(index.batch.segments.get(3), { state: 'current', volumes: ['a'], archived: undefined }, 'the next batch holds it too')
  await t.rejects(table.recordDrops(), /injected/)
  t.equal(removals.length, 0, 'no removal of the dropped copy while its drop is not on record')
  fail = false
  await table.recordDrops()
  t.equal(removals.length, 1, 'its removal is queued once the record is durable')
  t.equal(puts.length, 1, 'the failed record is put again on the next try')
  t.same(puts[0].get(3), { state: 'current', volumes: ['a'], archived: undefined })
  await table.recordDrops()
  t.equal(puts.length, 1, 'nothing more to record')

  // A read-only open records the drop in its scratch index and removes nothing (helper-61: it
  // tried, and printed warnings that it could not).
  const ro = new SegmentTable(stubParts({ index: { batch: new IndexBatch() }, db, logger: silentLogger, lifeCycle, opts: { readOnly: { scratchDir: '/nowhere' } } }), [4], new Map([[4, ['a', 'b']]]), new Map([[4, 'current']]), new Set(), 0)
  ro.copyDropped(4, 'b')
  await ro.recordDrops()
  t.equal(removals.length, 1, 'a read-only open queues no removal')
})

t.test('IndexWriter: a failed commit puts its changes back before the newer ones', async t => {
  const commits: Array<{ batch: IndexBatch, cp: Checkpoint }> = []
  let fail = true
  const db = {
    async commit (batch: IndexBatch, cp: Checkpoint) {
      if (fail) throw new Error('injected: commit failed')
      commits.push({ batch, cp })
    }
  }
  const log = { seq: 0, completedPosition: 100, async syncAll () {} }
  const p = stubParts({ db, log, opts: { checkpointIntervalMs: 0 }, logger: silentLogger, now: () => 5 })
  const w = new IndexWriter(p, 0, 100)
  t.same(w.last, { seq: 0, position: 100, timeMs: 5 })
  w.batch.addBlock(7, 1, 164, 0xabc)
  log.seq = 1
  log.completedPosition = 4260
  await t.rejects(w.checkpoint(), /injected/)
  t.equal(w.last.seq, 0, 'the checkpoint did not move')
  w.batch.addBlock(8, 2, 4324, 0xdef)
  log.seq = 2
  log.completedPosition = 8420
  fail = false
  await w.checkpointThrough(2)
  t.equal(commits.length, 1)
  t.same(commits[0].batch.history.toArray(), [7, 1, 164, 0xabc, 8, 2, 4324, 0xdef], 'older changes first, nothing lost')
  t.same(w.last, { seq: 2, position: 8420, timeMs: 5 })
  t.equal(w.pendingBlocks, 0)
  await w.checkpoint()
  t.equal(commits.length, 1, 'an empty batch commits nothing')
  w.stopTimer()
})

t.test('PassFence: only entries at or before the fence, in segments sealed before it', async t => {
  const fence = new PassFence(10, 3, 1000, [4])
  t.ok(fence.mayTouchSegment(2))
  t.notOk(fence.mayTouchSegment(3), 'the segment current when the fence was taken')
  t.ok(fence.mayTouchEntry(10, 2999))
  t.notOk(fence.mayTouchEntry(11, 100), 'an entry after the fence')
  t.notOk(fence.mayTouchEntry(5, 3000), 'an entry in the current segment')
  t.ok(fence.sees(10))
  t.notOk(fence.sees(11))
  t.ok(fence.heldCut(4), 'a snapshot that stood at the fence')
  t.notOk(fence.heldCut(7), 'one deleted before it (or never there)')
})

t.test('ReadEpochs: drain waits for the reads that began before it, not for later ones', async t => {
  const reads = new ReadEpochs()
  const early = reads.enter()
  let drained = false
  const d = reads.drain().then(() => { drained = true })
  const late = reads.enter()
  await new Promise(resolve => setImmediate(resolve))
  t.notOk(drained, 'a read from before is in flight')
  reads.exit(early)
  await d
  t.ok(drained, 'drained although a later read is still in flight')
  t.equal(reads.inFlight, 1)
  reads.exit(late)
})
