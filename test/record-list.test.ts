// RecordList (src/store/record-list.ts): the index batch's block versions and the versions
// compaction frees, in typed-array chunks. What goes in comes out in order, across chunks and
// after a list's chunks move into another; and a million records cost their typed arrays,
// with nothing copied on the JS heap as the list grows.
import t from 'tap'
import { RecordList } from '../src/store/record-list'
import { IndexBatch } from '../src/store/index-db'

t.test('records come back in order across chunk boundaries and after takeAll', async t => {
  const a = new RecordList(4)
  const b = new RecordList(4)
  for (let i = 0; i < 5000; i++) a.push4(i, i + 1, i * 4096, 0xffffffff - i)
  for (let i = 5000; i < 5003; i++) b.push4(i, i + 1, i * 4096, 0xffffffff - i)
  t.equal(a.length, 5000)
  a.takeAll(b)
  t.equal(a.length, 5003, 'lengths add up')
  t.equal(b.length, 0, 'the list taken from is empty')
  t.same(b.views(), [], 'and holds no chunk')
  a.push4(9, 9, 9, 9) // lands after the moved records
  const all = a.toArray()
  t.equal(all.length, 5004 * 4)
  let ok = true
  for (let i = 0; i < 5003; i++) ok &&= all[i * 4] === i && all[i * 4 + 1] === i + 1 && all[i * 4 + 2] === i * 4096 && all[i * 4 + 3] === 0xffffffff - i
  t.ok(ok, 'every record as pushed, in order')
  t.same(all.slice(-4), [9, 9, 9, 9])
  t.ok(a.views().every(v => v.length % 4 === 0), 'every view holds whole records')
  t.throws(() => a.takeAll(new RecordList(2)), /widths differ/)
  t.throws(() => new RecordList(3), /must divide/)
})

t.test('block numbers and sequence numbers up to 2^53 survive', async t => {
  const l = new RecordList(2)
  l.push2(2 ** 53 - 1, 2 ** 40 + 7)
  t.same(l.toArray(), [2 ** 53 - 1, 2 ** 40 + 7])
})

t.test('a batch of a million versions holds them in typed arrays: the JS heap does not grow with it', async t => {
  const batch = new IndexBatch()
  const heapBefore = process.memoryUsage().heapUsed
  const abBefore = process.memoryUsage().arrayBuffers
  for (let i = 0; i < 1_000_000; i++) batch.addBlock(i, i + 1, i * 4160, i >>> 0)
  for (let i = 0; i < 1_000_000; i++) batch.historyDeletes.push2(i, i)
  const heapGrew = process.memoryUsage().heapUsed - heapBefore
  const abGrew = process.memoryUsage().arrayBuffers - abBefore
  t.equal(batch.size, 2_000_000)
  // 32 bytes a version and 16 a delete: 48 MB (give or take what a GC frees meanwhile).
  t.ok(Math.abs(abGrew - 48e6) < 2 ** 20, `typed arrays: ${(abGrew / 2 ** 20).toFixed(1)} MiB`)
  t.ok(heapGrew < 8 * 2 ** 20, `JS heap grew ${(heapGrew / 2 ** 20).toFixed(1)} MiB (a number[] of 6 M doubles would be 48 MiB and more while it grows)`)
})
