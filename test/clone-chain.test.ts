// A clone of a clone (helper-84): its parent was opened without following the parent's own
// clone.json, so the grandchild read zeros wherever the middle clone never wrote, and its
// promote copied only the middle clone's own blocks. Now the chain is followed for reads and
// for promote, and each store in it protects the snapshot the next one reads.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { CLI, run, tmpDir } from './helpers/cli'

t.setTimeout(300_000)
const MiB = 1024 * 1024
const B = 4096
const cli = (...args: string[]) => run(process.execPath, [CLI, ...args], { timeoutMs: 120_000 })
async function ok (...args: string[]): Promise<string> {
  const r = await cli(...args)
  if (r.code !== 0) throw new Error(`logdisk ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`)
  return r.stdout
}
const block = (tag: string): Buffer => Buffer.alloc(B, tag)
async function read (dir: string, blk: number): Promise<Buffer> {
  const { store } = await openStore(dir, {}, [], 'read')
  try { return await store.read(blk * B, B) } finally { await store.close() }
}
async function write (dir: string, blk: number, data: Buffer, snapshot?: string): Promise<void> {
  const { store } = await openStore(dir)
  try {
    await store.write(blk * B, data)
    if (snapshot) await store.snapshot({ name: snapshot })
  } finally { await store.close() }
}
const clones = (dir: string): string[] => JSON.parse(fs.readFileSync(path.join(dir, 'clones.json'), 'utf8')).clones.map((c: { dir: string }) => c.dir)

t.test('a clone of a clone reads, protects and promotes through the whole chain', async t => {
  const root = tmpDir('clone-chain')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const P = path.join(root, 'P')
  const C1 = path.join(root, 'c1')
  const C2 = path.join(root, 'c2')
  await ok('create', P, '--size', '16M', '--segment-size', '2M')
  const far = 3 * MiB / B // a block past the first 256-block chunk
  await write(P, 1, block('p'))
  await write(P, 2, block('p'))
  await write(P, far, block('f'), 's0')
  await ok('clone', P, 's0', C1)
  await write(C1, 2, block('c'), 's1')
  t.same(clones(P), [C1], 'c1 is registered in P')
  await ok('clone', C1, 's1', C2)
  t.same(clones(C1), [C2], 'the clone of a clone is registered in its parent c1')
  await write(C2, 5, block('x'))

  t.same(await read(C2, 1), block('p'), 'c2 reads P\'s block where c1 never wrote (it read zeros)')
  t.same(await read(C2, far), block('f'), 'and a far one')
  t.same(await read(C2, 2), block('c'), 'c1\'s own block')
  t.same(await read(C2, 5), block('x'), 'its own block')
  t.same(await read(C2, 7), Buffer.alloc(B), 'zeros where none wrote')

  const delS0 = await cli('delete', P, 's0')
  t.equal(delS0.code, 1, 'P refuses to delete s0, which c1 (and through it c2) reads')
  t.match(delS0.stderr, new RegExp(`base of clone ${C1}`))
  const delS1 = await cli('delete', C1, 's1')
  t.equal(delS1.code, 1, 'c1 refuses to delete s1, which c2 reads')
  t.match(delS1.stderr, new RegExp(`base of clone ${C2}`))
  const promote1 = await cli('promote', C1)
  t.equal(promote1.code, 1, 'c1 cannot be promoted while it has a snapshot')
  t.same(clones(P), [C1], 'P still knows c1 after c2 was opened for writing')

  const out = await ok('promote', C2)
  t.match(out, /copied 3 blocks from snapshot s1/, 'promote of c2 copies what it read from c1 and from P')
  t.notOk(fs.existsSync(path.join(C2, 'clone.json')), 'c2 stands alone')
  t.same(clones(C1), [], 'c1 forgets c2')
  t.same(await read(C2, 1), block('p'), 'c2 keeps P\'s block')
  t.same(await read(C2, far), block('f'))
  t.same(await read(C2, 2), block('c'), 'and c1\'s')
  t.same(await read(C2, 5), block('x'), 'and its own')
  t.equal((await cli('delete', C1, 's1')).code, 0, 'c1 may delete s1 now')
  t.equal((await cli('delete', P, 's0')).code, 1, 'P still refuses s0 for c1')
  t.same(await read(C2, 1), block('p'), 'c2 reads the same without its parents')
})
