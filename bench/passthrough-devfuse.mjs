#!/usr/bin/env node
// The thinnest server on logdisk's own /dev/fuse transport: one 2 GiB sparse file as
// <mnt>/disk.img, served by dist/src/fuse/devfuse (the same session, reader threads and
// protocol options as `logdisk mount`) with one positional fs.read/fs.write per request and
// fsync -> fdatasync. The ceiling for logdisk on this transport: logdisk ÷ this is what the
// engine costs.
//
//   node bench/passthrough-devfuse.mjs <backing-file> <mountpoint>     (root)
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const REPO = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const { mountDevFuse } = require(path.join(REPO, 'dist/src/fuse/devfuse/mount.js'))
const { Errno, FsError } = require(path.join(REPO, 'dist/src/fuse/errno.js'))

const SIZE = 2 * 1024 ** 3
const NAME = 'disk.img'
const [backing, mnt] = process.argv.slice(2)
if (!backing || !mnt) {
  console.error('usage: node passthrough-devfuse.mjs <backing-file> <mountpoint>')
  process.exit(2)
}
const fd = fs.openSync(backing, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644)
if (fs.fstatSync(fd).size !== SIZE) fs.ftruncateSync(fd, SIZE)
const started = Date.now()
const log = {
  info (f, m) { console.log(m, JSON.stringify(f)) },
  warn (f, m) { console.error('warn:', m, JSON.stringify(f)) },
  error (f, m) { console.error('error:', m, JSON.stringify(f)) }
}
const errnoOf = err => (err && typeof err.errno === 'number' ? err.errno : Errno.EIO)
const p = (fn) => new Promise((resolve, reject) => fn((err, v) => err ? reject(new FsError(errnoOf(err))) : resolve(v)))

const handles = new Map()
let next = 1
const folder = {
  uid: process.getuid(),
  gid: process.getgid(),
  list: () => [NAME],
  attr (name) {
    if (name === undefined) return { key: '/', dir: true, mode: 0o40755, size: 4096, blockBytes: 4096, nlink: 2, timeMs: started }
    if (name !== NAME) throw new FsError(Errno.ENOENT)
    return { key: NAME, dir: false, mode: 0o100644, size: SIZE, blockBytes: 4096, nlink: 1, timeMs: started }
  },
  access (name) { folder.attr(name) },
  open (name, flags) {
    folder.attr(name)
    const h = { id: next++, image: name, writable: (flags & 3) !== 0 }
    handles.set(h.id, h)
    return h
  },
  release (h) { handles.delete(h.id) },
  handle (id) {
    const h = handles.get(id)
    if (!h) throw new FsError(Errno.EBADF)
    return h
  },
  async read (_h, pos, into) {
    const len = Math.max(0, Math.min(into.length, SIZE - pos))
    if (len === 0) return 0
    const got = await p(cb => fs.read(fd, into, 0, len, pos, cb))
    if (got < len) into.fill(0, got, len)
    return len
  },
  async write (_h, pos, data) {
    if (pos + data.length > SIZE) throw new FsError(Errno.EFBIG)
    return p(cb => fs.write(fd, data, 0, data.length, pos, cb))
  },
  async flush () {},
  fsync: () => p(cb => fs.fdatasync(fd, cb)),
  async fallocate () { throw new FsError(Errno.EOPNOTSUPP) },
  truncate (_name, size) { if (size !== SIZE) throw new FsError(Errno.EPERM) },
  utimens () {},
  chmod () { throw new FsError(Errno.EPERM) },
  chown () { throw new FsError(Errno.EPERM) },
  statfs: () => ({ bsize: 4096, frsize: 4096, blocks: SIZE / 4096, bfree: SIZE / 4096, bavail: SIZE / 4096, files: 1, ffree: 0, namemax: 255 }),
  openHandles: () => handles.size,
  destroy: () => p(cb => fs.fdatasync(fd, cb))
}

const session = await mountDevFuse(folder, path.resolve(mnt), { fsname: 'ptdevfuse', subtype: 'ptdevfuse', log })
console.log(`mounted ${mnt}`)
let stopping = false
const stop = async () => {
  if (stopping) return
  stopping = true
  try { await session.unmount() } catch (err) { console.error('unmount:', err.message) }
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
session.ended.then(() => process.exit(0))
