// The filesystem under the current segment's pool volume fills up (something else wrote to it)
// while another volume has room: the writes go on in a new segment on the other volume. They
// got ENOSPC before (the current segment was never sealed and rolled elsewhere), until the
// full volume got room back. Real parts: a 12 MiB tmpfs as the first volume, the /dev/fuse
// transport, writes and fsync on current.img.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { BLOCK_CRC_BYTES, ENTRY_HEADER_BYTES, segmentFileName } from '../src/store/format'
import { appendLimit } from '../src/store/pass-fence'
import { CLI, canMount, cleanup, logdisk, must, tmpDir } from './helpers/cli'

const MiB = 1024 * 1024
const skip = canMount()
const SEGMENT = 2 * MiB

/** Something else fills `dir`'s filesystem (a file `filler` there); returns the error that stopped it. */
function fillUp (dir: string): string | undefined {
  const fd = fs.openSync(path.join(dir, 'filler'), 'w')
  try {
    for (;;) fs.writeSync(fd, Buffer.alloc(64 * 1024, 7))
  } catch (err) {
    return (err as NodeJS.ErrnoException).code
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * A store of 2 MiB segments under a test dir, created on a 12 MiB tmpfs (`small`, first in
 * pool order) and the volumes `others` (directories), with `policy` set; not mounted.
 */
async function smallFirstStore (t: Test, name: string, others: string[], policy: string[]): Promise<{ store: string, mnt: string, small: string, others: string[], uuid: string }> {
  const dir = tmpDir(name)
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const [small, ...rest] = ['small', ...others].map(n => path.join(dir, n))
  for (const d of [small, ...rest]) fs.mkdirSync(d)
  await must('mount', '-t', 'tmpfs', '-o', 'size=12M', 'tmpfs', small)
  await must(process.execPath, CLI, 'create', store, '--size', '64M', '--segment-size', String(SEGMENT), ...[small, ...rest].flatMap(d => ['--pool', d]))
  t.equal((await logdisk('policy', 'set', store, ...policy)).code, 0)
  const uuid = JSON.parse(fs.readFileSync(path.join(store, 'store.json'), 'utf8')).uuid as string
  return { store, mnt: path.join(dir, 'mnt'), small, others: rest, uuid }
}

/**
 * Writes half a MiB to `img` (fsynced), runs `beforeFill`, has something else fill the
 * filesystem of `small`, then writes 15 MiB more (ENOSPC, EIO to the writer, before the
 * fixes) and fsyncs: everything reads back.
 */
function writePastFill (t: Test, img: string, small: string, beforeFill = (): void => {}): void {
  const fd = fs.openSync(img, 'r+')
  const model = Buffer.alloc(16 * MiB)
  try {
    const first = crypto.randomBytes(MiB / 2)
    fs.writeSync(fd, first, 0, first.length, 0)
    first.copy(model)
    fs.fsyncSync(fd)
    beforeFill()
    t.equal(fillUp(small), 'ENOSPC', 'the small volume\'s filesystem is full')
    for (let i = 1; i < 16; i++) {
      const data = crypto.randomBytes(MiB)
      fs.writeSync(fd, data, 0, data.length, i * MiB)
      data.copy(model, i * MiB)
    }
    fs.fsyncSync(fd)
    const back = Buffer.alloc(model.length)
    fs.readSync(fd, back, 0, back.length, 0)
    t.ok(back.equals(model), 'every write reads back')
  } finally {
    fs.closeSync(fd)
  }
}

t.test('a full filesystem under the current segment: writes go on in a segment on another volume', { skip, timeout: 120_000 }, async t => {
  const { store, mnt, small, others: [big] } = await smallFirstStore(t, 'pool-full-volume', ['big'], ['compact.every=0'])
  const m = await logdisk('mount', store, mnt, '--transport', 'devfuse')
  t.equal(m.code, 0, `mount: ${m.stderr}`)
  // Something else fills the small volume's filesystem: the current segment (on it, the
  // first volume in pool order) cannot grow any more.
  writePastFill(t, path.join(mnt, 'current.img'), small)
  const list = await logdisk('pool', 'list', store, '--json')
  t.equal(list.code, 0, list.stderr)
  const volumes = JSON.parse(list.stdout).volumes as Array<{ dir: string, segments: number }>
  t.ok((volumes.find(v => v.dir === big)?.segments ?? 0) >= 4, `the other volume took the new segments: ${JSON.stringify(volumes.map(v => [v.dir, v.segments]))}`)
  fs.rmSync(path.join(small, 'filler'))
  t.equal((await logdisk('unmount', mnt)).code, 0, 'unmount')
  const v = await logdisk('verify', store)
  t.equal(v.code, 0, `verify: ${v.stdout}${v.stderr}`)
})

// mirror=2: the filesystem under one copy of the current segment fills up while a third volume
// has room. Before the fix the full copy was dropped and the log went on degraded (verify then
// reported the segment with 1 of 2 copies); now the segment is sealed with both copies and the
// log goes on in segments with two copies on the volumes with room.
t.test('mirror=2, one copy\'s filesystem full: writes go on with two copies on the volumes with room', { skip, timeout: 120_000 }, async t => {
  const { store, mnt, small, others: [b1, b2], uuid } = await smallFirstStore(t, 'pool-full-mirror', ['b1', 'b2'], ['compact.every=0', 'mirror=2'])
  t.equal((await logdisk('pool', 'repair', store)).code, 0, 'the first segment gets its second copy')
  const segs = (d: string): string[] => { const p = path.join(d, uuid); return fs.existsSync(p) ? fs.readdirSync(p).filter(f => /^seg-\d+\.log$/.test(f)).sort() : [] }
  const m = await logdisk('mount', store, mnt, '--transport', 'devfuse')
  t.equal(m.code, 0, `mount: ${m.stderr}`)
  writePastFill(t, path.join(mnt, 'current.img'), small, () => {
    const all = [...new Set([small, b1, b2].flatMap(segs))]
    t.same(segs(small), all, `every segment so far (the current one, the one made ahead) has a copy on the small volume: ${JSON.stringify([small, b1, b2].map(segs))}`)
  })
  t.ok(segs(b1).length >= 4 && segs(b2).length >= 4, `the volumes with room took the new segments: ${JSON.stringify([small, b1, b2].map(segs))}`)
  fs.rmSync(path.join(small, 'filler'))
  t.equal((await logdisk('unmount', mnt)).code, 0, 'unmount')
  const v = await logdisk('verify', store)
  t.equal(v.code, 0, `verify: no segment lost a copy: ${v.stdout}${v.stderr}`)
})

// The segment made ahead lies on a volume whose filesystem something else filled after it was
// made; the current segment fills exactly, so the roll takes it, and its first write met
// ENOSPC while another volume had room (a hostile test's D1: the roll-away refused a segment
// with no entry yet). The roll now leaves a segment made ahead whose filesystem lost its room.
t.test('the segment made ahead is on a filesystem that filled since: the roll places the next one elsewhere', { skip, timeout: 120_000 }, async t => {
  const { store, mnt, small, others: [big], uuid } = await smallFirstStore(t, 'pool-full-ahead', ['big'], ['compact.every=0'])
  t.equal((await logdisk('mount', store, mnt, '--transport', 'devfuse')).code, 0, 'mount')
  const seg = (d: string, id: number): string => path.join(d, uuid, segmentFileName(id))
  const img = path.join(mnt, 'current.img')
  const fd = fs.openSync(img, 'r+')
  const entry = ENTRY_HEADER_BYTES + BLOCK_CRC_BYTES + 4096 // one 4 KiB write
  const limit = appendLimit('foreground', SEGMENT)
  const model = Buffer.alloc(8 * MiB)
  try {
    // 4 KiB fsynced writes until segment 0 holds all it can: the next write rolls.
    let block = 0
    while (fs.statSync(seg(small, 0)).size + entry <= limit) {
      const b = crypto.randomBytes(4096)
      fs.writeSync(fd, b, 0, b.length, block * 4096)
      fs.fsyncSync(fd)
      b.copy(model, block * 4096)
      block++
    }
    t.ok(fs.existsSync(seg(small, 1)), 'segment 1 was made ahead on the small volume')
    t.equal(fillUp(small), 'ENOSPC', 'the small volume\'s filesystem is full')
    const data = crypto.randomBytes(MiB)
    fs.writeSync(fd, data, 0, data.length, 4 * MiB) // ENOSPC before the fix
    fs.fsyncSync(fd)
    data.copy(model, 4 * MiB)
    const back = Buffer.alloc(model.length)
    fs.readSync(fd, back, 0, back.length, 0)
    t.ok(back.equals(model), 'every write reads back')
    t.ok(fs.existsSync(seg(big, 1)), 'segment 1 went to the other volume')
  } finally {
    fs.closeSync(fd)
  }
  fs.rmSync(path.join(small, 'filler'))
  t.equal((await logdisk('unmount', mnt)).code, 0, 'unmount')
  const v = await logdisk('verify', store)
  t.equal(v.code, 0, `verify: ${v.stdout}${v.stderr}`)
})
