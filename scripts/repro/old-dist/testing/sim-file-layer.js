const path = require('path')
const { SimFileLayer } = require(path.resolve(__dirname, '../../../../dist/src') + '/testing/sim-file-layer.js')

/** Today's SimFileLayer, reading a file that is not there as zero bytes (README.md: a printout only). */
class OldSimFileLayer extends SimFileLayer {
  readFile (file) { return super.readFile(file) ?? Buffer.alloc(0) }
}
module.exports = { SimFileLayer: OldSimFileLayer }
