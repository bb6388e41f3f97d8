// statfs through fuse-native, whose statvfs fields are 32-bit (issue 10 item 5): df must show
// the real size of huge sparse volumes.
import path from 'node:path'
import t from 'tap'
import { statfsCounts } from '../src/fuse/image-ops'
import { CLI, canMount, cleanup, logdisk, must, tmpDir } from './helpers/cli'

const TiB = 1024 ** 4
const PiB = 1024 ** 5

t.test('statfs counts fit in 32 bits and multiply back to the size', async t => {
  for (const size of [16 * 1024 ** 2, 8 * 1024 ** 3, 16 * TiB - 4096, 16 * TiB, 100 * TiB, 4 * PiB, 8 * PiB - 4096 * 1024]) {
    for (const blockBytes of [512, 4096, 65536]) {
      if (size % blockBytes !== 0) continue
      const written = Math.floor(size / 3 / blockBytes) * blockBytes
      const c = statfsCounts(size, written, blockBytes)
      t.ok(c.blocks <= 2 ** 32 - 1 && c.free <= 2 ** 32 - 1, `${size}/${blockBytes}: counts within 32 bits (${c.blocks})`)
      t.ok(c.unitBytes % blockBytes === 0 && (c.unitBytes & (c.unitBytes - 1)) === 0, 'the unit is a power-of-two multiple of the block')
      t.ok(size - c.blocks * c.unitBytes < c.unitBytes && c.blocks * c.unitBytes <= size, 'blocks x unit is the size, to within one unit')
      t.ok(Math.abs((size - written) - c.free * c.unitBytes) < c.unitBytes, 'free x unit is the unwritten space, to within one unit')
    }
  }
  t.equal(statfsCounts(16 * 1024 ** 2, 0, 4096).unitBytes, 4096, 'small volumes keep the block size as the unit')
  t.same(statfsCounts(4096 * 10, 4096 * 20, 4096), { unitBytes: 4096, blocks: 10, free: 0 }, 'free never goes negative')
})

t.test('df on mounted 100 TiB and 4 PiB sparse stores shows their size', { skip: canMount(), timeout: 180_000 }, async t => {
  const dir = tmpDir('statfs')
  t.teardown(() => cleanup(dir, t))
  for (const [size, bytes, shown] of [['100T', 100 * TiB, '100T'], ['4P', 4 * PiB, '4.0P']] as const) {
    const store = path.join(dir, `s${size}`)
    const mnt = path.join(dir, `m${size}`)
    await must(process.execPath, CLI, 'create', store, '--size', size)
    const m = await logdisk('mount', store, mnt)
    t.equal(m.code, 0, m.stderr)
    const df = (await must('df', '-B1', '--output=size,avail', mnt)).trim().split('\n')[1].trim().split(/\s+/).map(Number)
    t.equal(df[0], bytes, `${size}: df -B1 size is ${bytes}`)
    t.equal(df[1], bytes, `${size}: all of it available`)
    const human = (await must('df', '-h', '--output=size', mnt)).trim().split('\n')[1].trim()
    t.equal(human, shown, `${size}: df -h shows ${shown}`)
    t.equal((await logdisk('unmount', mnt)).code, 0)
  }
})
