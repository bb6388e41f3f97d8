// Holes punched in segment files (src/store/file-layer.ts): many ranges of a file in one call
// (xfs_io, one process per file) read back as zeros, free their disk blocks and leave the
// bytes between them as they were; a file that cannot be punched fails with IO, naming it.
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { nodeFileLayer, punchHoles } from '../src/store/file-layer'
import { isLogdiskError } from '../src/errors'

t.test('many ranges punched in one call read as zeros, free their blocks, and nothing else changes', async t => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-punch-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'seg.log')
  const before = crypto.randomBytes(8 << 20)
  fs.writeFileSync(file, before)
  fs.closeSync(fs.openSync(file, 'r+')) // written; fsync not needed for st_blocks
  const ranges: Array<[number, number]> = []
  for (let at = 4096; at + 8192 < before.length; at += 3 * 4096 * 7) ranges.push([at, 4096 * (1 + (at % 3))])
  const blocksBefore = fs.statSync(file).blocks
  await punchHoles(nodeFileLayer, file, ranges)
  const after = fs.readFileSync(file)
  const expect = Buffer.from(before)
  for (const [at, len] of ranges) expect.fill(0, at, at + len)
  t.equal(after.length, before.length, 'the size is kept (KEEP_SIZE)')
  t.ok(after.equals(expect), `${ranges.length} ranges read as zeros, every other byte as written`)
  const freedKiB = (blocksBefore - fs.statSync(file).blocks) / 2
  const punchedKiB = ranges.reduce((n, [, len]) => n + len, 0) / 1024
  t.equal(freedKiB, punchedKiB, `${punchedKiB} KiB of disk blocks freed`)
})

t.test('a file that cannot be punched fails with IO and names it', async t => {
  const err = await punchHoles(nodeFileLayer, '/proc/version', [[0, 4096], [8192, 4096]]).catch((e: unknown) => e)
  t.ok(isLogdiskError(err) && err.code === 'IO', 'IO')
  t.match((err as Error).message, /\/proc\/version/, (err as Error).message)
  const missing = await punchHoles(nodeFileLayer, '/nonexistent/seg.log', [[0, 4096]]).catch((e: unknown) => e)
  t.ok(isLogdiskError(missing) && missing.code === 'IO', `a missing file: ${(missing as Error).message}`)
})
