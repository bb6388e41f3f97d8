#!/usr/bin/env node
// Thinnest possible fuse-native server: one 2 GiB sparse backing file exposed as
// <mnt>/disk.img. It is the ceiling for any Node.js FUSE disk driver: every request
// goes straight to one positional fs.read / fs.write on a single fd, nothing else.
//
//   node bench/passthrough.mjs <backing-file> <mountpoint>
//
// Prints "mounted <mnt>" on stdout once the mount is live. SIGTERM / SIGINT unmount
// cleanly and exit 0.
import fs from 'node:fs'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const Fuse = require('fuse-native')

const SIZE = 2 * 1024 * 1024 * 1024
const FILE = '/disk.img'

const [backing, mnt] = process.argv.slice(2)
if (!backing || !mnt) {
  console.error('usage: node bench/passthrough.mjs <backing-file> <mountpoint>')
  process.exit(2)
}

// Create (sparse) or reuse the backing file, always exactly SIZE bytes long.
const fd = fs.openSync(backing, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644)
if (fs.fstatSync(fd).size !== SIZE) fs.ftruncateSync(fd, SIZE)

const uid = process.getuid()
const gid = process.getgid()
const now = new Date()
const rootStat = { mtime: now, atime: now, ctime: now, nlink: 2, size: 4096, mode: 0o40755, uid, gid }
const fileStat = { mtime: now, atime: now, ctime: now, nlink: 1, size: SIZE, mode: 0o100644, uid, gid }

const errno = (err) => (err && Fuse[err.code]) || Fuse.EIO

const ops = {
  getattr (path, cb) {
    if (path === '/') return cb(0, rootStat)
    if (path === FILE) return cb(0, fileStat)
    return cb(Fuse.ENOENT)
  },
  readdir (path, cb) {
    if (path === '/') return cb(0, ['disk.img'], [fileStat])
    return cb(Fuse.ENOENT)
  },
  open (path, flags, cb) {
    if (path !== FILE) return cb(Fuse.ENOENT)
    return cb(0, 42) // the handle is unused: everything goes to the single backing fd
  },
  release (path, handle, cb) { cb(0) },
  flush (path, handle, cb) { cb(0) },
  truncate (path, size, cb) { cb(path === FILE ? 0 : Fuse.ENOENT) }, // fixed-size disk: no-op
  ftruncate (path, handle, size, cb) { cb(0) },
  read (path, handle, buf, len, pos, cb) {
    if (pos >= SIZE) return cb(0)
    if (pos + len > SIZE) len = SIZE - pos
    fs.read(fd, buf, 0, len, pos, (err, n) => {
      if (err) return cb(errno(err))
      if (n < len) buf.fill(0, n, len) // cannot happen on a file of SIZE bytes, but stay correct
      return cb(len)
    })
  },
  write (path, handle, buf, len, pos, cb) {
    if (pos >= SIZE) return cb(Fuse.ENOSPC)
    if (pos + len > SIZE) len = SIZE - pos
    fs.write(fd, buf, 0, len, pos, (err, n) => {
      if (err) return cb(errno(err))
      return cb(n)
    })
  },
  // fuse-native calls fsync(path, datasync, handle, cb)
  fsync (path, datasync, handle, cb) {
    fs.fdatasync(fd, (err) => cb(err ? errno(err) : 0))
  },
  statfs (path, cb) {
    cb(0, {
      bsize: 4096, frsize: 4096, blocks: SIZE / 4096, bfree: 0, bavail: 0,
      files: 1, ffree: 0, favail: 0, fsid: 0, flag: 0, namemax: 255
    })
  }
}

const fuse = new Fuse(mnt, ops, {
  timeout: false,
  maxRead: 131072,
  force: true,
  mkdir: true,
  // fuse-native has no options for these; they ride along in the fsname option string
  fsname: 'passthrough,big_writes,max_write=131072,direct_io'
})

let closing = false
function shutdown (sig) {
  if (closing) return
  closing = true
  fuse.unmount((err) => {
    if (err) console.error(`passthrough: unmount failed on ${sig}:`, err.message)
    try { fs.closeSync(fd) } catch {}
    process.exit(err ? 1 : 0)
  })
}
process.on('SIGTERM', () => shutdown('SIGTERM'))
process.on('SIGINT', () => shutdown('SIGINT'))

fuse.mount((err) => {
  if (err) {
    console.error('passthrough: mount failed:', err.message)
    process.exit(1)
  }
  console.log(`mounted ${mnt}`)
})
