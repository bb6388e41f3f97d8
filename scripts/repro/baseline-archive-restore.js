// With backing storage, history stays complete and "every point in time stays restorable".
// A second `compact --into-baseline` overwrites a block's older baseline copy in place, while
// that older version's history key still points at it: restore --at fails (CORRUPT).
const { Store, restoreImage, B, SEG, blk, tmp, fs, path, D } = require('./common')
const { archiveLink } = require(D + '/archive/link.js')
const { parseTarget } = require(D + '/archive/parse-target.js')
;(async () => {
  const dir = tmp('blarch')
  const arch = tmp('blarch-target')
  const SIZE = 1024 * B
  const cfg = await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG })
  const archive = archiveLink(parseTarget(arch), cfg.uuid)
  const s = await Store.open(dir, { checkpointIntervalMs: 0, archive })
  await s.write(5 * B, blk('A'))
  for (let i = 0; i < 300; i++) await s.write((100 + i) * B, blk('fill' + i))
  const r1 = await s.compactIntoBaseline()
  console.log('merge 1:', r1.blocks, 'blocks into the baseline, cut', r1.cutSeq)
  const p = await s.syncPoint('P') // at P, block 5 = A
  await s.write(5 * B, blk('B'))
  for (let i = 0; i < 300; i++) await s.write((400 + i) * B, blk('fill2-' + i))
  const r2 = await s.compactIntoBaseline()
  console.log('merge 2:', r2.blocks, 'blocks into the baseline, cut', r2.cutSeq)
  const pt = await s.resolvePoint('P')
  console.log('restore --at P accepted:', pt.what)
  try {
    await restoreImage(s, pt.seq, path.join(dir, 'at-P.img'))
    const b5 = fs.readFileSync(path.join(dir, 'at-P.img')).subarray(5 * B, 5 * B + 1).toString()
    console.log('block 5 at P:', b5, b5 === 'A' ? 'OK' : 'BUG (wrong data)')
    if (b5 !== 'A') process.exitCode = 2
  } catch (e) {
    console.log('BUG: restore --at P failed:', e.code, e.message)
    process.exitCode = 2
  }
  console.log('current block 5 reads:', (await s.read(5 * B, 1)).toString())
  await s.close()
})().catch(e => { console.error('ERR', e); process.exit(1) })
