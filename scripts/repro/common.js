const path = require('path')
const fs = require('fs')
const os = require('os')
const D = process.env.DIST || path.resolve(__dirname, '../../dist/src') // run from the project root after make build
const { Store } = require(D + '/store/store.js')
const { restoreImage } = require(D + '/copy/restore.js')
const B = 4096
const SEG = 4096 + 64 + 256 * (4096 + 4) // smallest allowed segment: 1053760
function blk (tag) { const b = Buffer.alloc(B); b.write(String(tag).padEnd(32, '.')); return b }
function tmp (name) { const d = fs.mkdtempSync(path.join(os.tmpdir(), 'repro-' + name + '-')); return d }
async function imageAtSeq (store, seq, sizeBytes) {
  const out = Buffer.alloc(sizeBytes)
  for await (const { block, data } of store.imageAt(seq)) data.copy(out, block * B)
  return out
}
module.exports = { Store, restoreImage, B, SEG, blk, tmp, imageAtSeq, D, fs, path }
