// A pool on a filesystem it shares: the store leaves that filesystem its headroom, and the
// daemon compacts when the pool fills (compact.at), not only on its timer (compact.every).
// Found by filling this machine's root filesystem: a 2 GiB image's pool, remounted more often
// than compact.every, grew to 79 GiB of segments, and then not even the index could be written.
import crypto from 'node:crypto'
import fs from 'node:fs'
import t from 'tap'
import { filesystemHeadroom } from '../src/pool/pool'
import { canMount, daemonLog, logdisk } from './helpers/cli'
import { tmpfsStore } from './helpers/tmpfs-store'

const skip = canMount()
const MiB = 1024 * 1024
const IMAGE = 16 * MiB
const SEGMENT = 2 * MiB // tmpfsStore's

t.test('filesystemHeadroom: 2% of a filesystem, at least 256 MiB or a tenth of a small one, never under 8 MiB or half', async t => {
  t.equal(filesystemHeadroom(1000 * 1024 * MiB), 20 * 1024 * MiB, '1000 GiB: 20 GiB')
  t.equal(filesystemHeadroom(4 * 1024 * MiB), 256 * MiB, '4 GiB: 256 MiB')
  t.equal(filesystemHeadroom(100 * MiB), 10 * MiB, '100 MiB: a tenth')
  t.equal(filesystemHeadroom(40 * MiB), 8 * MiB, '40 MiB: 8 MiB (a tenth, 4 MiB, left a small store too little: writing commands need 4 MiB free)')
  t.equal(filesystemHeadroom(12 * MiB), 6 * MiB, '12 MiB: half')
  t.equal(filesystemHeadroom(12 * MiB + 1), 6 * MiB + 1, 'in whole bytes (pool list --json printed 1258291.2 once)')
})

/** One pass over the whole image, 1 MiB at a time, then fsync; the bytes written. */
function writePass (img: string, pass: number): Buffer {
  const data = crypto.createHash('sha256').update(`pass ${pass}`).digest()
  const all = Buffer.alloc(IMAGE)
  for (let i = 0; i < IMAGE; i += data.length) data.copy(all, i)
  all.writeUInt32LE(pass, 0)
  const fd = fs.openSync(img, 'r+')
  try {
    for (let off = 0; off < IMAGE; off += MiB) fs.writeSync(fd, all, off, MiB, off)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  return all
}

/** What the files under `dir` take, by top-level name, largest first (a failed room check says where it went). */
function spaceUse (dir: string): string {
  const size = (p: string): number => {
    const st = fs.lstatSync(p)
    return st.isDirectory() ? fs.readdirSync(p).reduce((n, e) => n + size(`${p}/${e}`), 0) : st.blocks * 512
  }
  const all: Array<[string, number]> = []
  const walk = (d: string, prefix: string, depth: number): void => {
    for (const e of fs.readdirSync(d)) {
      const p = `${d}/${e}`
      if (depth > 0 && fs.lstatSync(p).isDirectory()) walk(p, `${prefix}${e}/`, depth - 1)
      else all.push([`${prefix}${e}`, size(p)])
    }
  }
  walk(dir, '', 1)
  return all.sort((a, b) => b[1] - a[1]).slice(0, 6).map(([n, b]) => `${n} ${(b / MiB).toFixed(2)} MiB`).join(', ')
}

async function poolUse (store: string): Promise<number> {
  const r = await logdisk('pool', 'list', store, '--json')
  return (JSON.parse(r.stdout) as { useFraction: number }).useFraction
}

/** Bytes the files under `dir` take on the disk (allocated blocks), all levels down. */
function allocated (dir: string): number {
  const st = fs.lstatSync(dir)
  return st.isDirectory() ? fs.readdirSync(dir).reduce((n, e) => n + allocated(`${dir}/${e}`), 0) : st.blocks * 512
}

for (const second of [false, true]) {
  const layout = second ? 'with a second volume on the same filesystem, no --capacity' : 'one volume'
  t.test(`compact.at=0, no timer, ${layout}: the pool fills and says ENOSPC while its filesystem keeps the headroom; what was written before reads back`, { skip, timeout: 180_000 }, async t => {
    const { disk, store, img } = await tmpfsStore(t, 'space-full', { tmpfsMiB: 96, policy: ['history.keep=0', 'compact.every=1h', 'compact.at=0'] })
    const headroom = filesystemHeadroom(fs.statfsSync(disk).blocks * fs.statfsSync(disk).bsize)
    const outside = fs.statfsSync(disk).blocks * fs.statfsSync(disk).bsize - headroom
    if (second) {
      t.equal((await logdisk('pool', 'add', store, `${disk}/extra`)).code, 0, 'pool add of a second directory on the tmpfs')
      const list = JSON.parse((await logdisk('pool', 'list', store, '--json')).stdout) as { volumes: Array<{ capacityBytes: number }> }
      const capacity = list.volumes.reduce((n, v) => n + v.capacityBytes, 0)
      // Each counted all of the filesystem's free space: 2 x 86.3 MiB.
      t.ok(capacity <= outside, `pool list counts the filesystem's room once: ${(capacity / MiB).toFixed(2)} MiB over ${list.volumes.length} volumes, ${(outside / MiB).toFixed(2)} MiB outside the headroom`)
    }
    let last: Buffer | undefined
    let err: NodeJS.ErrnoException | undefined
    let pass = 1
    for (; pass <= 12 && err === undefined; pass++) {
      try { last = writePass(img, pass) } catch (e) { err = e as NodeJS.ErrnoException }
    }
    t.equal(err?.code, 'ENOSPC', `a write is refused with ENOSPC once the pool is full (96 MiB cannot hold 12 passes of 16 MiB): pass ${pass - 1}, ${err?.message ?? 'no error'}`)
    // Refused only when no segment fits: split evenly, a room of 1.2 segments gave each volume
    // 0.6 of one, and the pool said ENOSPC with a segment's room free (helper-51).
    const full = JSON.parse((await logdisk('pool', 'list', store, '--json')).stdout) as { volumes: Array<{ capacityBytes: number, usedBytes: number }> }
    const room = full.volumes.reduce((n, v) => n + v.capacityBytes - v.usedBytes, 0)
    t.ok(room < SEGMENT, `the pool has less than a segment's room left: ${(room / MiB).toFixed(2)} MiB`)
    const st = fs.statfsSync(disk)
    t.ok(st.bavail * st.bsize >= headroom / 2, `the filesystem still has room: ${(st.bavail * st.bsize / MiB).toFixed(1)} MiB free (headroom ${(headroom / MiB).toFixed(1)} MiB; ${spaceUse(disk)})`)
    // The segments alone never reach into the headroom. The pool counted the room of the
    // segments still filling (the current one, the one made ahead) twice, as free and as used:
    // the segments took 87.3 MiB of the 86.4 MiB outside the headroom; with a second volume
    // there, each volume left out only its own.
    const segments = allocated(`${disk}/store/segments`) + (second ? allocated(`${disk}/extra`) : 0)
    t.ok(segments <= outside, `the segments take ${(segments / MiB).toFixed(2)} MiB of the ${(outside / MiB).toFixed(2)} MiB outside the headroom`)
    t.ok(last !== undefined, 'at least one pass went in before')
    const first = fs.readFileSync(img).subarray(0, 4).readUInt32LE(0)
    t.ok(first >= last!.readUInt32LE(0), `the last whole pass (or a later partial one) reads back at the start of the image: pass ${first}, last whole ${last!.readUInt32LE(0)}`)
  })
}

t.test('compact.at=0.5: the daemon compacts as the pool fills; twelve passes over the image all go in and the last reads back', { skip, timeout: 240_000 }, async t => {
  const { store, img } = await tmpfsStore(t, 'space-pressure', { tmpfsMiB: 96, policy: ['history.keep=0', 'compact.every=1h', 'compact.at=0.5'] })
  let last: Buffer | undefined
  for (let pass = 1; pass <= 12; pass++) {
    last = writePass(img, pass)
    // The daemon's tick (200 ms here) sees the pool that full; wait for it (bounded), not a fixed time.
    const deadline = Date.now() + 20_000
    while (await poolUse(store) >= 0.5 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 100))
  }
  t.ok(fs.readFileSync(img).equals(last!), 'the last pass reads back whole')
  t.match(await daemonLog(store, /compact\.at=0\.5: the pool is that full/), /compact\.at=0\.5: the pool is that full; compacting now/, 'the daemon log says why it compacted')
  t.ok(await poolUse(store) < 0.9, 'and the pool is not full')
})
