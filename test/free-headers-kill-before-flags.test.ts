// A compaction pass makes a segment's free headers durable, then clears their pending record
// (pending-headers.ts), and the index takes the `freed` flags of the entries they free only
// when the pass commits, later. A kill -9 in between left free headers in the log that the
// index knew nothing of, and no record to redo them from: the next pass judged the entries
// anew, could keep a run's first entry this time (a snapshot's deletion marker whose segment
// was archived: MarkerLife), began its own run at the next entry, inside the free entry on
// disk, and punched it; a reader jumping over the free header landed on zeros (the sibling
// of simulation seed 7600183, found by reading the code: redo-free-headers-index.test.ts).
// The flags (and the segment's `unpunched` record) are now written before the record goes.
import t, { type Test } from 'tap'
import { MemoryLevel } from 'memory-level'
import { archiveLink } from '../src/archive/link'
import { parseTarget } from '../src/archive/parse-target'
import { nodeFileLayer, type FileLayer } from '../src/store/file-layer'
import { IndexDb, type LevelDb } from '../src/store/index-db'
import { PENDING_HEADERS_FILE } from '../src/store/pending-headers'
import { Store } from '../src/store/store'
import { fillSegment, scratchDir, tagBlock } from './helpers/sim-layer'

const B = 4096
const SEG = 258 * B // the smallest segment size, in whole pages
const SIZE = 1024 * B
const tmp = (t: Test, name: string): string => scratchDir(t, `logdisk-free-kill-${name}`)
const blk = (tag: string): Buffer => tagBlock(tag, B)

t.test('killed after a pass cleared its free headers\' record, before its index commit: the next pass keeps the log readable', async t => {
  let cleared = false // the pass removed its pending-headers file
  let armed = false
  const layer: FileLayer = {
    ...nodeFileLayer,
    remove: async (file: string): Promise<void> => {
      await nodeFileLayer.remove(file)
      if (armed && file.endsWith(PENDING_HEADERS_FILE)) cleared = true
    }
  }
  // One LevelDB that survives reopens (a kill -9 keeps what LevelDB wrote); its commits stop
  // dead once the record is gone: the process is killed there.
  const level = new MemoryLevel({ keyEncoding: 'buffer', valueEncoding: 'buffer' })
  const gate = async (): Promise<void> => {
    if (cleared) throw Object.assign(new Error('killed'), { code: 'EIO' })
  }
  const openIndex = async (): Promise<IndexDb> => {
    if (level.status === 'closed') await level.open()
    return IndexDb.openLevel(level as unknown as LevelDb, gate)
  }
  const dir = tmp(t, 'store')
  const cfg = await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG })
  const archive = archiveLink(parseTarget(tmp(t, 'target')), cfg.uuid)
  const open = (): Promise<Store> => Store.open(dir, { fileLayer: layer, openIndex, checkpointIntervalMs: 0, historyKeepMs: 0, archive })
  const s = await open()

  for (let b = 0; b < 4; b++) await s.write(b * B, blk(`A${b}`)) // dead once s1 goes
  await s.snapshot({ name: 's1' })
  for (let b = 0; b < 4; b++) await s.write(b * B, blk(`B${b}`)) // live: the current data, and s2's
  await s.snapshot({ name: 's2' }) // s1 is not the newest snapshot: its marker may go
  await s.deleteSnapshot('s1') // a deletion marker right after live entries: a run begins with it
  await s.write(60 * B, blk('X')) // dead before the first pass
  await s.write(61 * B, blk('Y')) // dead before the first pass
  await s.write(70 * B, blk('Z')) // live at the first pass, dead at the second
  await fillSegment(s, 100, 'f') // segment 0 sealed
  await s.write(60 * B, blk('X2'))
  await s.write(61 * B, blk('Y2'))
  await s.flush()

  armed = true
  await t.rejects(s.compact({ cleanBelow: 0 }), /killed/, 'the pass is killed after its record went')
  t.ok(cleared, 'the pending-headers record was cleared before the kill')
  await s.abandon()
  cleared = false
  armed = false

  const again = await open()
  t.teardown(() => again.close().catch(() => undefined))
  await again.write(70 * B, blk('Z2'))
  await again.flush()
  await again.compact({ cleanBelow: 0 })

  const verify = await again.verify()
  t.same(verify.problems, [], 'verify finds the log whole')
  t.ok(verify.ok)
  const buf = Buffer.alloc(B)
  for (const [block, tag] of [[0, 'B0'], [3, 'B3'], [60, 'X2'], [61, 'Y2'], [70, 'Z2']] as Array<[number, string]>) {
    await again.read(block * B, B, buf)
    t.ok(buf.equals(blk(tag)), `block ${block} reads ${tag}`)
  }
  const s2 = Buffer.alloc(B)
  for (let b = 0; b < 4; b++) {
    await again.readSnapshot('s2', b * B, B, s2)
    t.ok(s2.equals(blk(`B${b}`)), `s2 block ${b} reads B${b}`)
  }
})
