// send / receive through the CLI: a chain of incrementals reproduces every snapshot; corrupt,
// truncated and misplaced streams are refused with one line and change nothing.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { openStore } from '../src/app/open'
import { LogdiskError } from '../src/errors'
import { Store } from '../src/store/store'
import { receiveStream } from '../src/copy/receive'
import { Rng } from '../src/testing/rng'
import { CLI, canMount, cleanup, logdisk, must, run, tmpDir } from './helpers/cli'

const B = 4096
const SIZE = 16 << 20
const SEED = Number(process.env.SEED ?? 20261122)

/** sha256 of snapshot images (and of the current volume, under ''), read with the library in one open. */
async function imageShas (dir: string, names: string[] = []): Promise<Record<string, string>> {
  const s = (await openStore(dir, { checkpointIntervalMs: 0 })).store
  try {
    const out: Record<string, string> = {}
    for (const name of ['', ...names]) {
      const h = crypto.createHash('sha256')
      for (let off = 0; off < s.sizeBytes; off += 1 << 20) {
        h.update(name === '' ? await s.read(off, 1 << 20) : await s.readSnapshot(name, off, 1 << 20))
      }
      out[name] = h.digest('hex')
    }
    return out
  } finally {
    await s.close()
  }
}

async function imageSha (dir: string, name?: string): Promise<string> {
  return (await imageShas(dir, name === undefined ? [] : [name]))[name ?? '']
}

/** Random writes (unaligned, overlapping, some all zeros) then a snapshot, `n` times. */
async function buildChain (dir: string, names: string[], rng: Rng): Promise<void> {
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: 4 << 20 })
  const s = (await openStore(dir, { checkpointIntervalMs: 0 })).store
  try {
    for (const name of names) {
      const writes = rng.range(5, 40)
      for (let i = 0; i < writes; i++) {
        const len = rng.range(1, 64 * B)
        const off = rng.int(SIZE - len)
        const data = rng.chance(0.2) ? Buffer.alloc(len) : crypto.randomBytes(len)
        await s.write(off, data)
      }
      await s.snapshot({ name })
    }
  } finally {
    await s.close()
  }
}

/** What a refused receive must leave as it was: the snapshots, the log's last seq, the current image. */
async function state (dir: string): Promise<{ snapshots: string[], seq: number, current: string }> {
  const s = (await openStore(dir, { checkpointIntervalMs: 0 })).store
  const snapshots = s.snapshots().map(x => x.name)
  const seq = s.status().index.seq
  await s.close()
  return { snapshots, seq, current: await imageSha(dir) }
}

function oneLineError (t: Test, r: { code: number, stderr: string }, pattern: RegExp, what: string): void {
  t.equal(r.code, 1, `${what}: exit 1`)
  t.match(r.stderr, /^logdisk: [^\n]+\n$/, `${what}: one line: ${r.stderr.trim()}`)
  t.match(r.stderr, pattern, what)
}

const names = ['s1', 's2', 's3', 's4', 's5']

t.test('a chain of five snapshots, full then incrementals (files and pipes), reproduces every image', async t => {
  const dir = tmpDir('sendrecv')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const a = path.join(dir, 'a')
  const b = path.join(dir, 'b')
  t.comment(`seed ${SEED}`)
  await buildChain(a, names, new Rng(SEED))

  const full = path.join(dir, 's1.stream')
  t.equal((await logdisk('send', a, 's1', '--out', full)).code, 0)
  const receivedFrom = Date.now()
  const got = await logdisk('receive', b, '--in', full, '--json')
  t.equal(got.code, 0, got.stderr)
  t.equal(JSON.parse(got.stdout).created, true, 'receive created the missing store')
  for (let i = 1; i < names.length; i++) {
    const [from, to] = [names[i - 1], names[i]]
    if (i % 2 === 1) {
      const r = await run('bash', ['-o', 'pipefail', '-c', `"${process.execPath}" "${CLI}" send "${a}" ${to} --from ${from} --out - | "${process.execPath}" "${CLI}" receive "${b}" --in -`])
      t.equal(r.code, 0, `send ${to} --from ${from} | receive: ${r.stderr}`)
      t.match(r.stdout, new RegExp(`received snapshot ${to} \\(incremental from ${from}\\)`))
    } else {
      const file = path.join(dir, `${to}.stream`)
      t.equal((await logdisk('send', a, to, '--from', from, '--out', file)).code, 0)
      t.ok(fs.statSync(file).size < fs.statSync(full).size + SIZE, 'the incremental stream exists')
      const r = await logdisk('receive', b, '--in', file)
      t.equal(r.code, 0, r.stderr)
    }
  }
  t.same((await state(b)).snapshots, names, 'the receiver has the five snapshots, in order')
  // Received snapshots keep the times they were taken at on the sender (the stream carries them).
  const times = async (dir: string): Promise<Array<[string, number, string]>> =>
    JSON.parse((await logdisk('snapshots', dir, '--json')).stdout).map((x: { name: string, timeMs: number, time: string }) => [x.name, x.timeMs, x.time])
  const timesA = await times(a)
  t.same(await times(b), timesA, 'the receiver\'s snapshots have the sender\'s creation times')
  t.ok(timesA.every(([, ms]) => ms < receivedFrom), 'times from before the receives began, not the receive times')
  const log = JSON.parse((await logdisk('log', b, '--json')).stdout) as Array<{ kind: string, time: string, payload?: { createdMs?: number } }>
  const markers = log.filter(e => e.kind === 'snapshot')
  t.same(markers.map(e => e.payload?.createdMs), timesA.map(([, ms]) => ms), 'each snapshot marker records createdMs (so a rebuilt index has them too)')
  t.ok(markers.every(e => Date.parse(e.time) >= receivedFrom), 'while the log entries keep the receive time, in log order')
  const [shaA, shaB] = [await imageShas(a, names), await imageShas(b, names)]
  for (const name of names) t.equal(shaB[name], shaA[name], `${name}: the images are identical`)
  t.equal(new Set(names.map(n => shaA[n])).size, names.length, 'the five images differ from each other')
  t.equal(shaB[''], shaA.s5, 'the receiver\'s current volume is s5')

  // Each changed block goes once: an incremental is no bigger than its changed blocks.
  const diff = JSON.parse((await logdisk('diff', a, 's4', 's5', '--json')).stdout) as { blocks: number }
  const inc = path.join(dir, 'inc.stream')
  const sent = JSON.parse((await logdisk('send', a, 's5', '--from', 's4', '--out', inc, '--json')).stdout)
  t.equal(sent.dataBlocks + sent.zeroBlocks, diff.blocks, 'the incremental holds each changed block once')
  t.ok(fs.statSync(inc).size < diff.blocks * (B + 32) + 4096, 'and nothing more')
  const verified = await logdisk('verify', b)
  t.equal(verified.code, 0, `the receiver verifies: ${verified.stderr}${verified.stdout}`)
})

t.test('corrupt and truncated streams are refused in one line; the target is unchanged', async t => {
  const dir = tmpDir('sendbad')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const a = path.join(dir, 'a')
  const b = path.join(dir, 'b')
  await buildChain(a, ['s1', 's2', 's3'], new Rng(SEED + 1))
  for (const [name, from] of [['s1', undefined], ['s2', 's1']]) {
    const f = path.join(dir, `${name}.stream`)
    await must(process.execPath, CLI, 'send', a, name!, ...(from ? ['--from', from] : []), '--out', f)
    await must(process.execPath, CLI, 'receive', b, '--in', f)
  }
  const good = path.join(dir, 's3.stream')
  await must(process.execPath, CLI, 'send', a, 's3', '--from', 's2', '--out', good)
  const bytes = fs.readFileSync(good)
  t.ok(bytes.length > 100_000, `the stream has data (${bytes.length} bytes)`)
  const before = await state(b)

  const bad = path.join(dir, 'bad.stream')
  const rng = new Rng(SEED + 2)
  // Through the CLI: a flipped bit in the header and in block data, two truncations, a pipe.
  for (const at of [40, Math.floor(bytes.length / 2)]) {
    const copy = Buffer.from(bytes)
    copy[at] ^= 1 << rng.int(8)
    fs.writeFileSync(bad, copy)
    oneLineError(t, await logdisk('receive', b, '--in', bad), /stream is corrupt.*nothing was applied/, `a bit flipped at byte ${at} of ${bytes.length}`)
  }
  for (const at of [30, bytes.length - 1]) {
    fs.writeFileSync(bad, bytes.subarray(0, at))
    oneLineError(t, await logdisk('receive', b, '--in', bad), /stream is truncated.*nothing was applied/, `truncated to ${at} bytes`)
  }
  const piped = await run('bash', ['-c', `head -c ${Math.floor(bytes.length / 2)} "${good}" | "${process.execPath}" "${CLI}" receive "${b}" --in -`])
  oneLineError(t, piped, /stream is truncated/, 'a truncated stream through a pipe')
  // A flipped bit in the preamble's format: damage, not a stream of a newer logdisk (helper-77).
  const flipped = Buffer.from(bytes)
  flipped[9] ^= 0x40
  fs.writeFileSync(bad, flipped)
  oneLineError(t, await logdisk('receive', b, '--in', bad), /stream is corrupt: its preamble says format \d+, but its header record \(which checks\) says format 2: the preamble is damaged.*nothing was applied/, 'a flipped bit in the preamble\'s format')
  fs.writeFileSync(bad, Buffer.concat([bytes, Buffer.from('x')]))
  oneLineError(t, await logdisk('receive', b, '--in', bad), /bytes follow the trailer/, 'bytes after the trailer')

  // Through the library, a wider sweep: random bit flips and cuts anywhere, all refused.
  const store = (await openStore(b, { checkpointIntervalMs: 0 })).store
  let refused = 0
  const cases = 40
  try {
    for (let i = 0; i < cases; i++) {
      const copy = i % 2 === 0 ? Buffer.from(bytes) : bytes.subarray(0, rng.int(bytes.length))
      if (i % 2 === 0) copy[rng.int(copy.length)] ^= 1 << rng.int(8)
      fs.writeFileSync(bad, copy)
      try {
        await receiveStream(store, bad)
        t.fail(`case ${i} was received`)
      } catch (err) {
        if (err instanceof LogdiskError && (err.code === 'CORRUPT' || /stream has format/.test(err.message)) && /nothing was applied/.test(err.message)) refused++
        else t.fail(`case ${i}: ${(err as Error).message}`)
      }
    }
  } finally {
    await store.close()
  }
  t.equal(refused, cases, `${cases} random flips and cuts are all refused as corrupt`)
  t.same(await state(b), before, 'no new snapshot, no write, same current image')
  t.same(fs.readdirSync(b).filter(f => f.endsWith('.spool')), [], 'no spool file left behind')

  t.equal((await logdisk('receive', b, '--in', good)).code, 0, 'the intact stream is received')
  t.equal(await imageSha(b, 's3'), await imageSha(a, 's3'))
})

t.test('an incremental applies only onto its base (by name and content); --force rolls back local writes', async t => {
  const dir = tmpDir('sendbase')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const a = path.join(dir, 'a')
  await buildChain(a, ['s1', 's2', 's3'], new Rng(SEED + 3))
  const streams: Record<string, string> = {}
  for (const [name, from] of [['s1', undefined], ['s2', 's1'], ['s3', 's2']]) {
    streams[name!] = path.join(dir, `${name}.stream`)
    await must(process.execPath, CLI, 'send', a, name!, ...(from ? ['--from', from] : []), '--out', streams[name!])
  }

  // No base at all: the store holds only s1.
  const c = path.join(dir, 'c')
  await must(process.execPath, CLI, 'receive', c, '--in', streams.s1)
  let before = await state(c)
  oneLineError(t, await logdisk('receive', c, '--in', streams.s3), /has no snapshot s2, the base/, 'a missing base is refused')
  t.same(await state(c), before, 'unchanged')

  // A base of the right name but other content.
  const d = path.join(dir, 'd')
  await Store.create(d, { sizeBytes: SIZE, blockBytes: B })
  const s = (await openStore(d)).store
  await s.write(0, Buffer.alloc(B, 7))
  await s.snapshot({ name: 's2' })
  await s.close()
  before = await state(d)
  oneLineError(t, await logdisk('receive', d, '--in', streams.s3), /is not the stream's base s2/, 'a base with other content is refused')
  t.same(await state(d), before, 'unchanged')

  // The right base, but the current volume was written since.
  await must(process.execPath, CLI, 'receive', c, '--in', streams.s2)
  const w = (await openStore(c)).store
  await w.write(5 * B + 100, Buffer.alloc(3 * B, 9))
  await w.write(SIZE - B, Buffer.alloc(B, 9))
  await w.close()
  before = await state(c)
  oneLineError(t, await logdisk('receive', c, '--in', streams.s3), /was written since snapshot s2 \(\d+ blocks\); give --force/, 'writes since the base are not overwritten silently')
  t.same(await state(c), before, 'unchanged')
  const forced = await logdisk('receive', c, '--in', streams.s3, '--force')
  t.equal(forced.code, 0, forced.stderr)
  // The text says how many local blocks went (it was only in --json: helper-77).
  const rolled = /; (\d+) blocks written since the base rolled back \(--force\);/.exec(forced.stdout)
  t.ok(rolled !== null && Number(rolled[1]) > 0, `blocks outside the stream were rolled back to s2, and it says so: ${forced.stdout.trim()}`)
  t.equal(await imageSha(c, 's3'), await imageSha(a, 's3'), 'with --force the image is s3 exactly')

  // A full stream into a store that holds data; and a store of another size.
  oneLineError(t, await logdisk('receive', d, '--in', streams.s1), /is not empty .* --force/, 'a full stream does not overwrite data silently')
  const e = path.join(dir, 'e')
  await must(process.execPath, CLI, 'create', e, '--size', '8M')
  before = await state(e)
  oneLineError(t, await logdisk('receive', e, '--in', streams.s1), new RegExp(`; logdisk resize ${e} --size \\d+ first, or receive into a store created with that --size`), 'another volume size is refused, saying resize would do')
  t.same(await state(e), before, 'unchanged')
  oneLineError(t, await logdisk('receive', e, '--in', streams.s1, '--segment-size', '2M'), /--segment-size applies only to a store receive creates; .* is a store already/, '--segment-size is for a store receive creates')
  t.same(await state(e), before, 'unchanged')
  // A stream does not carry the sender's segment size: the created store's is the user's choice.
  const g = path.join(dir, 'g')
  oneLineError(t, await logdisk('receive', g, '--in', streams.s1, '--segment-size', '1K'), /segment/i, 'a segment size create refuses is refused')
  t.notOk(fs.existsSync(path.join(g, 'store.json')), 'nothing was created')
  const made = await logdisk('receive', g, '--in', streams.s1, '--segment-size', '2M')
  t.equal(made.code, 0, made.stderr)
  t.equal(JSON.parse(fs.readFileSync(path.join(g, 'store.json'), 'utf8')).segmentBytes, 2 * 1024 * 1024, 'the store receive created has the segment size given')
  t.equal(await imageSha(g, 's1'), await imageSha(a, 's1'), 'and the snapshot received')
  oneLineError(t, await logdisk('receive', path.join(dir, 'missing'), '--in', streams.s2), /no store at .*incremental/, 'an incremental does not create a store')
  t.notOk(fs.existsSync(path.join(dir, 'missing')), 'nothing was created')
  oneLineError(t, await logdisk('send', a, 's1', '--from', 's3', '--out', path.join(dir, 'x')), /must be a snapshot older than s1/, 'send --from a newer snapshot is refused')
  oneLineError(t, await logdisk('send', a, 'nope', '--out', path.join(dir, 'x')), /no snapshot named "nope"/, 'send of a missing snapshot')
  t.notOk(fs.existsSync(path.join(dir, 'x')) || fs.existsSync(path.join(dir, 'x.partial')), 'no stream file left')
  const exists = await logdisk('send', a, 's1', '--out', streams.s1)
  oneLineError(t, exists, /exists; give --force/, 'an existing stream file is not overwritten')
})

t.test('send | receive between two mounted stores goes through both daemons', { skip: canMount() }, async t => {
  const dir = tmpDir('sendmnt')
  t.teardown(() => cleanup(dir, t))
  const a = path.join(dir, 'a')
  const b = path.join(dir, 'b')
  await buildChain(a, ['s1', 's2'], new Rng(SEED + 4))
  await must(process.execPath, CLI, 'create', b, '--size', String(SIZE))
  const ma = path.join(dir, 'ma')
  const mb = path.join(dir, 'mb')
  t.equal((await logdisk('mount', a, ma)).code, 0)
  t.equal((await logdisk('mount', b, mb)).code, 0)
  // A receive writes the current volume: refused while current.img is open (a filesystem over
  // it was corrupted by a receive --force: helper-62).
  const streamS1 = path.join(dir, 's1.stream')
  t.equal((await logdisk('send', a, 's1', '--out', streamS1)).code, 0)
  const held = fs.openSync(path.join(mb, 'current.img'), 'r')
  try {
    const busy = await logdisk('receive', b, '--in', streamS1, '--force')
    t.equal(busy.code, 1, 'receive into a store whose current.img is open is refused')
    t.match(busy.stderr, /^logdisk: current\.img is open \(held by .*\), and a receive writes the current volume under it \(a filesystem mounted over it would be corrupted\); .* first; nothing was changed\n$/, 'in one line naming the holder')
  } finally {
    fs.closeSync(held)
  }
  for (const [name, from] of [['s1', undefined], ['s2', 's1']]) {
    const pipe = `"${process.execPath}" "${CLI}" send "${a}" ${name} ${from ? `--from ${from}` : ''} --out - | "${process.execPath}" "${CLI}" receive "${b}" --in -`
    let r = await run('bash', ['-o', 'pipefail', '-c', pipe])
    // The kernel's RELEASE of the file closed above may still be on its way.
    for (let i = 0; i < 50 && r.code !== 0 && /current\.img is open/.test(r.stderr); i++) {
      await new Promise(resolve => setTimeout(resolve, 200))
      r = await run('bash', ['-o', 'pipefail', '-c', pipe])
    }
    t.equal(r.code, 0, `${name}: ${r.stderr}`)
  }
  await new Promise(resolve => setTimeout(resolve, 1100)) // the kernel's 1 s entry cache
  for (const name of ['s1', 's2']) {
    const sha = (f: string): string => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex')
    t.equal(sha(path.join(mb, `${name}.img`)), sha(path.join(ma, `${name}.img`)), `${name}.img is identical in both mounts`)
  }
  t.equal((await logdisk('unmount', ma)).code, 0)
  t.equal((await logdisk('unmount', mb)).code, 0)
})
