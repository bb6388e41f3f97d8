const path = require('path')
module.exports = require(path.resolve(__dirname, '../../../../dist/src') + '/archive/link.js')
