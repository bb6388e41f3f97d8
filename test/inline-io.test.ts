// Inline I/O (IoOptions.inline: a read(2) or writev(2) on the calling thread when the FUSE
// server has no other request in flight). They must return exactly what a read through the thread pool
// returns, for every shape of request: runs across segment boundaries, unaligned edges,
// trimmed and never-written blocks, snapshots, runs over the inline limit; and refuse a block
// whose bytes fail their CRC the same way (CORRUPT, never the bytes). Through a mount, reads
// and writes at depth 1 are inline (the store's own count, in the metrics) and fio's checksums
// of every block hold at depths 1 and 16.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { CLI, canMount, cleanup, logdisk, run, tmpDir } from './helpers/cli'

const B = 4096
const SEED = Number(process.env.SEED ?? 4242)

t.test(`inline reads return what thread-pool reads return (SEED=${SEED})`, async t => {
  const root = tmpDir('inline-io')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const blocks = 1024
  const dir = path.join(root, 'store')
  await Store.create(dir, { sizeBytes: blocks * B, blockBytes: B, segmentBytes: 2 << 20 }) // 2 MiB segments: runs cross them
  const s = (await openStore(dir, { checkpointIntervalMs: 0 })).store
  t.teardown(() => s.close())
  const rng = new Rng(SEED)
  for (let i = 0; i < 300; i++) {
    const first = rng.int(blocks - 64)
    const n = 1 + rng.int(64)
    await s.write(first * B, crypto.randomBytes(n * B), undefined, { inline: i % 2 === 0 })
    if (i === 150) await s.snapshot({ name: 'half' })
  }
  await s.discard(100 * B, 50 * B) // trimmed blocks read as zeros
  const cases: Array<[offset: number, length: number]> = [[0, blocks * B], [0, 1], [B - 1, 2], [123, 5 * B + 7], [99 * B, 52 * B], [512 * B, 40 * B]]
  for (let i = 0; i < 200; i++) {
    const offset = rng.int(blocks * B - 1)
    cases.push([offset, 1 + rng.int(Math.min(blocks * B - offset, 200 * 1024))])
  }
  for (const [offset, length] of cases) {
    const pooled = await s.read(offset, length)
    const inline = await s.read(offset, length, Buffer.alloc(length), { inline: true })
    if (!inline.equals(pooled)) t.fail(`current ${offset}+${length} differs`)
    const snapPooled = await s.readSnapshot('half', offset, length)
    const snapInline = await s.readSnapshot('half', offset, length, undefined, { inline: true })
    if (!snapInline.equals(snapPooled)) t.fail(`snapshot ${offset}+${length} differs`)
  }
  t.pass(`${cases.length} ranges read the same both ways, current and snapshot`)
  t.ok(s.inlineIo.reads > cases.length, `${s.inlineIo.reads} reads were inline`)
  t.ok(s.inlineIo.writes > 50, `${s.inlineIo.writes} of 300 writes were inline (half were asked)`)
  // The transport's largest write (1 MiB; a buffered loop device sends 512 KiB) is one inline
  // writev too (a store whose segment it fits, so that no roll splits it).
  const bigDir = path.join(root, 'big')
  await Store.create(bigDir, { sizeBytes: 8 << 20, blockBytes: B })
  const big = (await openStore(bigDir, { checkpointIntervalMs: 0 })).store
  t.teardown(() => big.close())
  for (const size of [512 * 1024, 1024 * 1024]) {
    const before = big.inlineIo.writes
    const data = crypto.randomBytes(size)
    await big.write(size, data, undefined, { inline: true })
    t.equal(big.inlineIo.writes, before + 1, `a ${size / 1024} KiB write asked inline was written inline`)
    t.ok((await big.read(size, size)).equals(data), `the ${size / 1024} KiB written inline reads back`)
  }

  // A bad block is refused inline as it is through the pool.
  const block = 7
  await s.write(block * B, Buffer.alloc(B, 0xab))
  await s.flush()
  const mark = Buffer.alloc(B, 0xab)
  const file = fs.readdirSync(path.join(dir, 'segments')).map(f => path.join(dir, 'segments', f)).find(f => fs.readFileSync(f).includes(mark))
  t.ok(file, 'found the block in a segment')
  const at = fs.readFileSync(file!).lastIndexOf(mark)
  const fd = fs.openSync(file!, 'r+')
  fs.writeSync(fd, Buffer.from([0x00]), 0, 1, at + 100)
  fs.closeSync(fd)
  await t.rejects(s.read(block * B, B, Buffer.alloc(B), { inline: true }), { code: 'CORRUPT' }, 'a block failing its CRC is refused inline')
  await t.rejects(s.read(block * B, B), { code: 'CORRUPT' }, 'and through the pool')
})

t.test('through a mount: reads and writes at depth 1 are inline, fio checks every block at depths 1 and 16', { skip: canMount(), timeout: 300_000 }, async t => {
  const dir = tmpDir('inline-io-mount')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  t.equal((await run(process.execPath, [CLI, 'create', store, '--size', '256M', '--segment-size', '16M'])).code, 0, 'created')
  const m = await run(process.execPath, [CLI, 'mount', store, mnt, '--transport', 'devfuse'])
  t.equal(m.code, 0, `mounted: ${m.stderr}`)
  const img = path.join(mnt, 'current.img')
  /** The store's own count of inline system calls (the metric), by op. */
  const inline = (): { read: number, write: number } => {
    const text = fs.readFileSync(path.join(mnt, 'stats'), 'utf8')
    const of = (op: string): number => Number(new RegExp(`^logdisk_inline_io_operations\\{[^}]*op="${op}"[^}]*\\} (\\d+)`, 'm').exec(text)?.[1] ?? NaN)
    return { read: of('read'), write: of('write') }
  }
  const common = [`--filename=${img}`, '--size=64M', '--bsrange=4k-256k', '--bs_unaligned=0', '--ioengine=libaio', '--direct=1', '--verify=crc32c', '--verify_fatal=1', '--output-format=terse']
  for (const depth of ['1', '16']) {
    const before = inline()
    const w = await run('fio', ['--name=w', '--rw=randwrite', `--iodepth=${depth}`, '--do_verify=0', ...common])
    t.equal(w.code, 0, `fio wrote at depth ${depth}: ${w.stderr.trim()}`)
    const v = await run('fio', ['--name=w', '--rw=randwrite', `--iodepth=${depth}`, '--verify_only', ...common])
    t.equal(v.code, 0, `fio read back and checked every block at depth ${depth}: ${v.stderr.trim().split('\n').slice(-3).join(' | ')}`)
    const after = inline()
    t.ok(after.read - before.read > (depth === '1' ? 100 : -1), `depth ${depth}: ${after.read - before.read} reads inline`)
    t.ok(after.write - before.write > (depth === '1' ? 100 : -1), `depth ${depth}: ${after.write - before.write} writes inline`)
  }
  t.equal((await logdisk('unmount', mnt)).code, 0, 'unmounted')
  const verify = await logdisk('verify', store)
  t.equal(verify.code, 0, `verify is clean: ${verify.stdout.trim().split('\n').pop()}`)
})
