// Free headers a compaction could not write (the filesystem refused them: ENOSPC) stay on
// record (pending-headers.ts), and the next pass redoes them before it judges anything
// (redoPendingHeaders). The index never took the entries they free, so that pass judged them
// anew; it may keep a run's first entry this time (here a snapshot's deletion marker: its
// segment was archived by the pass that failed, so the deletion must stay beside the archived
// snapshot marker, MarkerLife) and begin its own run at the next entry, inside the redone free
// entry, and punch it. A reader jumping over the redone free header then landed on zeros:
// verify found 'not an entry header' and the rest of the segment was lost (simulation seed
// 7600183, PAGES=1 REBUILDS=1). The redo now marks those entries freed in the index.
import t, { type Test } from 'tap'
import { archiveLink } from '../src/archive/link'
import { parseTarget } from '../src/archive/parse-target'
import { nodeFileLayer, type FileHandle, type FileLayer } from '../src/store/file-layer'
import { Store } from '../src/store/store'
import { fillSegment, scratchDir, tagBlock } from './helpers/sim-layer'

const B = 4096
const SEG = 258 * B // the smallest segment size, in whole pages
const SIZE = 1024 * B
const tmp = (t: Test, name: string): string => scratchDir(t, `logdisk-redo-free-${name}`)
const blk = (tag: string): Buffer => tagBlock(tag, B)

t.test('free headers redone from their record: the next pass frees on from them, the log stays readable', async t => {
  let refuse = false // segment 0's writes fail ENOSPC (after it is sealed: only free headers go there)
  let refused = 0
  const layer: FileLayer = {
    ...nodeFileLayer,
    open: async (file: string, create: boolean): Promise<FileHandle> => {
      const h = await nodeFileLayer.open(file, create)
      if (!file.endsWith('seg-000000000000.log')) return h
      return new Proxy(h, {
        get (target, prop, receiver) {
          const v = Reflect.get(target, prop, receiver)
          if (typeof v !== 'function') return v
          if (prop !== 'writev') return v.bind(target)
          return (buffers: Buffer[], position: number) => {
            if (!refuse) return v.call(target, buffers, position)
            refused++
            return Promise.reject(Object.assign(new Error(`ENOSPC: no space left on device, write ${file}`), { code: 'ENOSPC' }))
          }
        }
      })
    }
  }
  const dir = tmp(t, 'store')
  const cfg = await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG })
  const s = await Store.open(dir, { fileLayer: layer, checkpointIntervalMs: 0, historyKeepMs: 0, archive: archiveLink(parseTarget(tmp(t, 'target')), cfg.uuid) })
  t.teardown(() => s.close().catch(() => undefined))

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

  refuse = true
  await t.rejects(s.compact({ cleanBelow: 0 }), /no space|ENOSPC/, 'the pass fails at its free headers')
  refuse = false
  t.ok(refused > 0, `segment 0 refused ${refused} header writes`)
  await s.write(70 * B, blk('Z2'))
  await s.flush()
  await s.compact({ cleanBelow: 0 })

  const verify = await s.verify()
  t.same(verify.problems, [], 'verify finds the log whole')
  t.ok(verify.ok)
  const buf = Buffer.alloc(B)
  for (const [block, tag] of [[0, 'B0'], [3, 'B3'], [60, 'X2'], [61, 'Y2'], [70, 'Z2']] as Array<[number, string]>) {
    await s.read(block * B, B, buf)
    t.ok(buf.equals(blk(tag)), `block ${block} reads ${tag}`)
  }
})
