import path from 'node:path'
import t from 'tap'
import { MemoryLevel } from 'memory-level'
import { parseSegmentFileName } from '../src/store/format'
import { IndexDb, type LevelDb } from '../src/store/index-db'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { SimFileLayer } from '../src/testing/sim-file-layer'
import { PassThroughLayer, scratchDir } from './helpers/sim-layer'

/**
 * Compaction recycles a segment left with nothing: the index must say so before any copy of it
 * is deleted. It deleted the copies first; a power loss between the two left the index naming
 * a segment whose copies were gone (simulation seed 16500192: verify found a copy lost).
 */
const B = 4096
const SIZE = 4 * 1024 * 1024
const SEGMENT = 1024 * 1024 + 64 * 1024

t.test('a recycled segment is on record as recycled before its file is removed', async t => {
  const dir = scratchDir(t, 'logdisk-recycle')
  const level = new MemoryLevel({ keyEncoding: 'buffer', valueEncoding: 'buffer' })
  const openIndex = async (): Promise<IndexDb> => IndexDb.openLevel(level as unknown as LevelDb)
  const atRemoval: Array<{ id: number, state: string | undefined }> = []
  class Layer extends PassThroughLayer {
    override async remove (file: string): Promise<void> {
      const id = parseSegmentFileName(path.basename(file))
      // What a power loss right here would leave on record.
      if (id !== undefined) atRemoval.push({ id, state: (await (await openIndex()).segments()).get(id)?.state })
      return super.remove(file)
    }
  }
  const sim = new SimFileLayer()
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT }, sim)
  const store = await Store.open(dir, { fileLayer: new Layer(sim), openIndex, checkpointIntervalMs: 0, historyKeepMs: 0 })
  const rng = new Rng(21)
  while (store.volumesOf(2) === undefined) await store.write(0, rng.bytes(64 * B)) // segments 0 and 1: only dead versions
  await store.flush()
  const report = await store.compact()
  t.ok(report.segmentsRecycled >= 1, `compaction recycled ${report.segmentsRecycled} segments`)
  t.ok(atRemoval.length >= 1, 'and removed their files')
  for (const r of atRemoval) t.equal(r.state, 'recycled', `segment ${r.id} was on record as recycled when its file went`)
  await store.close()
})
