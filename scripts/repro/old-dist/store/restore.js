// Moved to copy/restore.js (the store library knows nothing of copies).
const path = require('path')
module.exports = require(path.resolve(__dirname, '../../../../dist/src') + '/copy/restore.js')
