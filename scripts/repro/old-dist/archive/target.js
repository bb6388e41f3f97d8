// parseTarget moved to archive/parse-target.js.
const path = require('path')
const D = path.resolve(__dirname, '../../../../dist/src')
module.exports = { ...require(D + '/archive/target.js'), ...require(D + '/archive/parse-target.js') }
