// Two mirrored pool volumes, then `policy set mirror=1`, then one volume's directory gone (its
// disk lost). The index still named a copy there beside the one elsewhere: `pool remove` of it
// was refused ("run logdisk pool repair first"), and `pool repair` found nothing to copy (mirror=1
// asks for one copy, and there was one) and left the record as it was: refused for good, although
// every block had an intact copy (helpers 75 and 79, CLI.md "Known defects"). Now `pool repair`
// forgets a lost copy beyond what mirror asks when the others pass their checksums, and `pool
// remove` of a volume whose directory is gone does the same for its copies; a copy beside one that
// fails its checksums is kept on record (the volume may come back with what the other lacks).
// Siblings: mirror raised to 2 again afterwards, and the directory coming back after the removal.
// Real parts: the CLI and the disk; the writes go through the store's API (no mount).
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import { openStore } from '../src/app/open'
import { segmentFileName } from '../src/store/format'
import { logdisk, tmpDir } from './helpers/cli'

const MIB = 1024 * 1024

interface PoolList { volumes: Array<{ id: string, dir: string, state: string, segments: number }>, warnings: string[] }

async function list (store: string): Promise<PoolList> {
  return JSON.parse((await logdisk('pool', 'list', store, '--json')).stdout) as PoolList
}

/** A store on volumes a and b, mirror=2, `data` written, then mirror=1. */
async function mirroredThenLowered (t: Test, name: string, data: Buffer): Promise<{ dir: string, store: string, a: string, b: string, c: string }> {
  const dir = tmpDir(name)
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const store = path.join(dir, 's')
  const [a, b, c] = ['a', 'b', 'c'].map(v => path.join(dir, v))
  t.equal((await logdisk('create', store, '--size', '32M', '--segment-size', '2M', '--pool', a)).code, 0, 'create')
  t.equal((await logdisk('pool', 'add', store, b)).code, 0, 'b assigned')
  t.equal((await logdisk('policy', 'set', store, 'mirror=2')).code, 0, 'mirror=2')
  const { store: s } = await openStore(store)
  try { await s.write(0, data); await s.flush() } finally { await s.close() }
  t.equal((await logdisk('policy', 'set', store, 'mirror=1')).code, 0, 'mirror=1')
  return { dir, store, a, b, c }
}

async function readsBack (t: Test, store: string, data: Buffer): Promise<void> {
  const { store: s } = await openStore(store, {}, [], 'read')
  try { t.ok((await s.read(0, data.length)).equals(data), 'every write reads back') } finally { await s.close() }
  const v = await logdisk('verify', store)
  t.equal(v.code, 0, `verify: ${v.stdout.trim()} ${v.stderr.trim()}`)
}

function segmentsOn (store: string, volume: string): string[] {
  const own = fs.readdirSync(volume).map(n => path.join(volume, n)).find(p => fs.statSync(p).isDirectory() && fs.existsSync(path.join(p, '.logdisk-owner.json')))
  return own === undefined ? [] : fs.readdirSync(own).filter(n => n.endsWith('.log'))
}

t.test('mirror lowered to 1, a volume gone: pool repair forgets its copies, pool remove goes through', { timeout: 120_000 }, async t => {
  const data = crypto.randomBytes(5 * MIB)
  const { store, b } = await mirroredThenLowered(t, 'gone-lowered-repair', data)
  t.ok(segmentsOn(store, b).length >= 2, `b holds copies: ${segmentsOn(store, b).join(' ')}`)
  fs.rmSync(b, { recursive: true })
  const bId = (await list(store)).volumes.find(v => v.dir === b)!.id
  const repair = await logdisk('pool', 'repair', store)
  t.equal(repair.code, 0, `pool repair: ${repair.stdout.trim()} ${repair.stderr.trim()}`)
  t.match(repair.stdout, /made 0 copies; forgot \d+ lost cop(y|ies) beyond what mirror asks/, 'repair says it forgot the lost copies')
  const missing = (await list(store)).warnings.find(w => w.includes(`pool volume ${b} is missing`))
  t.notMatch(missing, /segment/, `the index names no copy on b any more: ${missing}`)
  const removed = await logdisk('pool', 'remove', store, b)
  t.equal(removed.code, 0, `pool remove of b: ${removed.stdout.trim()} ${removed.stderr.trim()}`)
  t.match(removed.stdout, /\(0 segment\(s\) moved\)/, 'nothing left to forget')
  t.notMatch(removed.stderr, /error/, 'no error line')
  t.notOk((await list(store)).volumes.some(v => v.dir === b || v.id === bId), 'b is out of the pool')
  t.same((await list(store)).warnings, [], 'no warning left')
  await readsBack(t, store, data)
})

t.test('mirror lowered to 1, a volume gone: pool remove forgets its copies itself', { timeout: 120_000 }, async t => {
  const data = crypto.randomBytes(5 * MIB)
  const { store, a, b } = await mirroredThenLowered(t, 'gone-lowered-remove', data)
  const held = (await list(store)).volumes.find(v => v.dir === a)!.segments
  t.ok(segmentsOn(store, b).length >= 2, `b holds copies: ${segmentsOn(store, b).join(' ')}`)
  fs.rmSync(b, { recursive: true })
  const refusedBefore = (await list(store)).warnings.find(w => w.includes(`pool volume ${b} is missing`))
  t.match(refusedBefore, /its \d+ segment\(s\) read from their other copies/, `b is missing, its copies named: ${refusedBefore}`)
  const removed = await logdisk('pool', 'remove', store, b)
  t.equal(removed.code, 0, `pool remove of b: ${removed.stdout.trim()} ${removed.stderr.trim()}`)
  t.match(removed.stdout, /\([1-9]\d* segment\(s\) moved\)/, 'its copies counted as moved off')
  t.notOk((await list(store)).volumes.some(v => v.dir === b), 'b is out of the pool')
  t.equal((await list(store)).volumes.find(v => v.dir === a)!.segments, held, 'a holds every segment')
  await readsBack(t, store, data)
})

t.test('a lost copy beside one that fails its checksums stays on record; back again, nothing was lost', { timeout: 120_000 }, async t => {
  const data = crypto.randomBytes(5 * MIB)
  const { store, a, b } = await mirroredThenLowered(t, 'gone-lowered-damaged', data)
  // A bit flipped in the data of segment 0's copy on a.
  const ownA = fs.readdirSync(a).map(n => path.join(a, n)).find(p => fs.statSync(p).isDirectory())!
  const seg0 = path.join(ownA, segmentFileName(0))
  const fd = fs.openSync(seg0, 'r+')
  const at = 256 * 1024
  const byte = Buffer.alloc(1)
  fs.readSync(fd, byte, 0, 1, at)
  byte[0] ^= 0x10
  fs.writeSync(fd, byte, 0, 1, at)
  fs.closeSync(fd)
  fs.renameSync(b, b + '.away')
  const refused = await logdisk('pool', 'remove', store, b)
  t.equal(refused.code, 1, 'pool remove refused: the copy left of segment 0 fails its checksums')
  t.match(refused.stderr, /whose copies elsewhere are fewer than mirror=1 asks or fail their checksums/, `says why: ${refused.stderr.trim()}`)
  await logdisk('pool', 'repair', store) // exits 1 or 0: nothing to mend from while b is away; what matters is the record
  const named = (await list(store)).warnings.find(w => w.includes(`pool volume ${b} is missing`))
  t.match(named, /its 1 segment\(s\) read from their other copies/, `the index still names b for segment 0: ${named}`)
  // Back again: nothing was lost; with mirror=2 and a third volume, repair mends a from b.
  fs.renameSync(b + '.away', b)
  t.equal((await logdisk('policy', 'set', store, 'mirror=2')).code, 0, 'mirror=2')
  const repair = await logdisk('pool', 'repair', store)
  t.equal(repair.code, 0, `back, pool repair: ${repair.stdout.trim()} ${repair.stderr.trim()}`)
  t.match(repair.stdout, /made [1-9]\d* cop/, 'copies made')
  await readsBack(t, store, data)
})

t.test('forgotten, then mirror=2 again on a new volume; the old directory comes back after the removal', { timeout: 120_000 }, async t => {
  const data = crypto.randomBytes(5 * MIB)
  const { store, a, b, c } = await mirroredThenLowered(t, 'gone-lowered-back', data)
  fs.renameSync(b, b + '.away')
  t.equal((await logdisk('pool', 'remove', store, b)).code, 0, 'b removed while gone')
  t.equal((await logdisk('pool', 'add', store, c)).code, 0, 'c assigned')
  t.equal((await logdisk('policy', 'set', store, 'mirror=2')).code, 0, 'mirror=2 again')
  const repair = await logdisk('pool', 'repair', store)
  t.equal(repair.code, 0, `pool repair: ${repair.stdout.trim()} ${repair.stderr.trim()}`)
  t.match(repair.stdout, /made [1-9]\d* cop/, 'copies made on c')
  const after = await list(store)
  t.equal(after.volumes.find(v => v.dir === c)!.segments, after.volumes.find(v => v.dir === a)!.segments, 'c holds a copy of every segment a holds')
  t.same(after.warnings, [], 'no warning')
  await readsBack(t, store, data)

  // The old directory comes back, with its stale copies; added again, the store removes them.
  fs.renameSync(b + '.away', b)
  t.ok(segmentsOn(store, b).length >= 2, 'b came back with its old copies')
  const added = await logdisk('pool', 'add', store, b)
  t.equal(added.code, 0, `pool add b again: ${added.stdout.trim()} ${added.stderr.trim()}`)
  const again = await logdisk('pool', 'repair', store)
  t.equal(again.code, 0, `pool repair: ${again.stdout.trim()} ${again.stderr.trim()}`)
  t.same(segmentsOn(store, b), [], 'the stale copies on b are gone')
  await readsBack(t, store, data)
  t.equal((await logdisk('pool', 'remove', store, b)).code, 0, 'and b removes cleanly')
  await readsBack(t, store, data)
})
