// A stream whose records and CRCs are sound but whose blocks are not the snapshot it names (a
// record left out, a block changed and its CRCs made again), or whose snapshot name the cut
// refuses ("current"), was written into the target before it was refused: the log held its
// writes, the current volume changed, and the right stream was refused next ("written since
// the base; give --force"). With --force, the blocks written since the base were rolled back
// for nothing (a hostile test, helper-53). Such a stream must be refused before anything is
// written.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { StreamWriter, readStream, type StreamHeader, type StreamRecord } from '../src/copy/stream-format'
import { Store } from '../src/store/store'
import { CLI, logdisk, must, tmpDir } from './helpers/cli'

const B = 4096
const SIZE = 16 << 20

async function state (dir: string): Promise<{ snapshots: string[], seq: number, current: string }> {
  const s = (await openStore(dir, { checkpointIntervalMs: 0 })).store
  try {
    const h = crypto.createHash('sha256')
    for (let off = 0; off < s.sizeBytes; off += 1 << 20) h.update(await s.read(off, 1 << 20))
    return { snapshots: s.snapshots().map(x => x.name), seq: s.status().index.seq, current: h.digest('hex') }
  } finally {
    await s.close()
  }
}

/** The stream in `from`, its records passed through `change` (undefined drops one), written to `to` with fresh CRCs and trailer. */
async function rewrite (from: string, to: string, change: { header?: (h: StreamHeader) => StreamHeader, record?: (r: StreamRecord, i: number) => StreamRecord | undefined }): Promise<void> {
  const chunks: Buffer[] = []
  const w = new StreamWriter({ write: async chunk => { chunks.push(Buffer.from(chunk)) } })
  let i = 0
  for await (const r of readStream(from)) {
    if ('header' in r) await w.header(change.header ? change.header(r.header) : r.header)
    else if ('trailer' in r) await w.trailer()
    else {
      const out = change.record ? change.record({ ...r, ...(r.type === 'data' ? { data: Buffer.from(r.data) } : {}) }, i) : r
      i++
      if (out?.type === 'data') await w.data(out.block, out.data, B)
      else if (out?.type === 'zero') await w.zero(out.block, out.count)
    }
  }
  fs.writeFileSync(to, Buffer.concat(chunks))
}

t.test('a sound stream that is not its snapshot is refused before anything is written, with and without --force', { timeout: 180_000 }, async t => {
  const dir = tmpDir('receive-refused-sound')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const a = path.join(dir, 'a')
  await Store.create(a, { sizeBytes: SIZE, blockBytes: B, segmentBytes: 4 << 20 })
  const s = (await openStore(a, { checkpointIntervalMs: 0 })).store
  try {
    await s.write(0, crypto.randomBytes(64 * B))
    await s.snapshot({ name: 'base' })
    await s.write(1000 * B, crypto.randomBytes(8 * B))
    await s.write(3000 * B, crypto.randomBytes(8 * B))
    await s.write(2000 * B, Buffer.alloc(4 * B)) // a zero run
    await s.snapshot({ name: 'next' })
  } finally {
    await s.close()
  }
  const full = path.join(dir, 'base.stream')
  const inc = path.join(dir, 'next.stream')
  await must(process.execPath, CLI, 'send', a, 'base', '--out', full)
  await must(process.execPath, CLI, 'send', a, 'next', '--from', 'base', '--out', inc)

  const bad: Array<[string, Parameters<typeof rewrite>[2], RegExp]> = [
    ['a data record left out', { record: (r, i) => i === 0 ? undefined : r }, /do not make snapshot next from snapshot base.*nothing was applied/],
    ['a block changed, its CRCs made again', { record: r => { if (r.type === 'data') r.data[5] ^= 0xff; return r } }, /do not make snapshot next from snapshot base.*nothing was applied/],
    ['the snapshot named "current"', { header: h => ({ ...h, snapshot: { ...h.snapshot, name: 'current' } }) }, /snapshot name "current" must be.*nothing was applied/]
  ]
  for (const force of [false, true]) {
    const b = path.join(dir, `b-${force ? 'force' : 'plain'}`)
    await must(process.execPath, CLI, 'receive', b, '--in', full)
    if (force) { // something written since the base, which --force would roll back
      const w = (await openStore(b, { checkpointIntervalMs: 0 })).store
      try { await w.write(500 * B, crypto.randomBytes(2 * B)); await w.flush() } finally { await w.close() }
    }
    for (const [what, change, message] of bad) {
      const f = path.join(dir, 'bad.stream')
      await rewrite(inc, f, change)
      const before = await state(b)
      const r = await logdisk('receive', b, '--in', f, ...(force ? ['--force'] : []))
      t.equal(r.code, 1, `${what}${force ? ' (--force)' : ''}: refused`)
      t.match(r.stderr, /^logdisk: [^\n]+\n$/, 'in one line')
      t.match(r.stderr, message, r.stderr.trim())
      t.same(await state(b), before, 'nothing was written: the same log, snapshots and current volume')
    }
    const good = await logdisk('receive', b, '--in', inc, ...(force ? ['--force'] : []))
    t.equal(good.code, 0, `the right stream is received afterwards: ${good.stderr}`)
  }
})
