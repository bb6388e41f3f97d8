// Compaction with backing storage archives a segment before punching it, but when the same
// pass makes the segment `inactive` it rewrites the segment record without `archived: true`.
// After a reopen the store no longer knows a complete copy exists: reads of old versions fail,
// and the next `archive` run re-puts the punched local file over the complete archived copy.
const { Store, restoreImage, B, SEG, blk, tmp, fs, path, D } = require('./common')
const { archiveLink } = require(D + '/archive/link.js')
const { parseTarget } = require(D + '/archive/parse-target.js')
const { decodeArchive } = require(D + '/archive/codec.js')
;(async () => {
  const dir = tmp('arflag')
  const arch = tmp('arflag-target')
  const SIZE = 1024 * B
  const cfg = await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG })
  const archive = archiveLink(parseTarget(arch), cfg.uuid)
  const open = () => Store.open(dir, { checkpointIntervalMs: 0, archive })
  const eight = (tag) => Buffer.concat(Array.from({ length: 8 }, (_, i) => blk(tag + i)))
  let s = await open()
  await s.write(5 * B, eight('A'))                       // blocks 5..12 = A0..A7 (segment 0)
  const p = await s.syncPoint('P')                       // marker in segment 0
  let nf = 0
  while (s.status().segments.current === 1 && s.status().segments.active === 0) { await s.write((200 + nf) * B, blk('f' + nf)); nf++ } // fill segment 0 until it rolls
  await s.write(5 * B, eight('B'))                       // segment 1: blocks 5..12 = B
  for (let i = 0; i < nf; i++) await s.write((200 + i) * B, blk('g' + i))
  await s.flush()
  const rep = await s.compact({ cleanBelow: 0 })
  console.log('compact:', JSON.stringify({ inactive: rep.segmentsInactive, punched: rep.bytesPunched, freed: rep.versionsFreed }), 'archived objects:', fs.readdirSync(arch))
  const restoreP = async (label) => {
    const pt = await s.resolvePoint('P')
    const out = path.join(dir, `at-P-${label}.img`)
    try {
      await restoreImage(s, pt.seq, out, { force: true })
      const b5 = fs.readFileSync(out).subarray(5 * B, 5 * B + 2).toString()
      console.log(`${label}: restore --at P ok, block 5 = ${b5}`)
    } catch (e) { console.log(`BUG ${label}: restore --at P FAILED: ${e.code} ${e.message}`); process.exitCode = 2 }
  }
  await restoreP('before reopen')
  await s.close()
  s = await open()
  console.log('after reopen: status segments', JSON.stringify(s.status().segments))
  await restoreP('after reopen')
  const a = await s.archive({})
  console.log('archive():', JSON.stringify(a))
  const obj = fs.readdirSync(arch).find(n => n.includes('seg-000000000000'))
  const seg0 = await decodeArchive(fs.readFileSync(path.join(arch, obj)))
  const zeros = seg0.subarray(12288, 16384).equals(Buffer.alloc(4096))
  console.log(`archived object of segment 0 now holds ${zeros ? 'ZEROS (the punched local copy)' : 'the original data'} where block 5's old version was`)
  if (zeros) { console.log('BUG: the archived object lost history'); process.exitCode = 2 }
  await restoreP('after archive')
  await s.close()
})().catch(e => { console.error('ERR', e); process.exit(1) })
