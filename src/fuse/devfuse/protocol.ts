/**
 * The parts of the kernel's FUSE protocol (include/uapi/linux/fuse.h) that the /dev/fuse
 * server speaks, as constants and byte offsets. Everything is little-endian (x86-64, arm64).
 * Layouts are those of protocol 7.38; none of the structures used here changed size between
 * 7.23 and 7.45, so a kernel offering any minor >= MIN_MINOR talks to us in these layouts.
 * native-notes/devfuse.md explains each choice.
 */

export const KERNEL_MAJOR = 7
/** The highest minor this server implements: 7.38 added FOPEN_PARALLEL_DIRECT_WRITES. */
export const OUR_MINOR = 38
/** The lowest kernel minor accepted: 7.28 added max_pages (1 MiB requests); Linux 4.20 and later. */
export const MIN_MINOR = 28

export const ROOT_ID = 1

export const Op = {
  LOOKUP: 1,
  FORGET: 2, // no reply
  GETATTR: 3,
  SETATTR: 4,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  ACCESS: 34,
  INTERRUPT: 36,
  DESTROY: 38,
  BATCH_FORGET: 42, // no reply
  FALLOCATE: 43
} as const

export const OP_NAMES: Record<number, string> = Object.fromEntries(Object.entries(Op).map(([k, v]) => [v, k]))

/** INIT flags (fuse_init_in.flags / fuse_init_out.flags). */
export const Init = {
  ASYNC_READ: 1 << 0,
  ATOMIC_O_TRUNC: 1 << 3,
  BIG_WRITES: 1 << 5,
  ASYNC_DIO: 1 << 15,
  PARALLEL_DIROPS: 1 << 18,
  MAX_PAGES: 1 << 22,
  INIT_EXT: 1 << 30
} as const

/** fuse_open_out.open_flags */
export const FOPEN_DIRECT_IO = 1 << 0
export const FOPEN_PARALLEL_DIRECT_WRITES = 1 << 6

/** fuse_setattr_in.valid */
export const Fattr = {
  MODE: 1 << 0,
  UID: 1 << 1,
  GID: 1 << 2,
  SIZE: 1 << 3,
  ATIME: 1 << 4,
  MTIME: 1 << 5,
  ATIME_NOW: 1 << 7,
  MTIME_NOW: 1 << 8,
  CTIME: 1 << 10
} as const

/** Bit set in the unique of an INTERRUPT request (and of its reply). */
export const INT_REQ_BIT = 1

/** The kernel refuses reads of /dev/fuse into smaller buffers. */
export const MIN_READ_BUFFER = 8192

// Sizes of the structures, in bytes.
export const IN_HEADER = 40 // fuse_in_header: len u32, opcode u32, unique u64, nodeid u64, uid, gid, pid u32, total_extlen u16, padding u16
export const OUT_HEADER = 16 // fuse_out_header: len u32, error i32, unique u64
export const WRITE_IN = 40 // fuse_write_in: fh, offset u64; size, write_flags u32; lock_owner u64; flags, padding u32
export const ATTR = 88 // fuse_attr
export const ENTRY_OUT = 40 + ATTR // nodeid, generation, entry_valid, attr_valid u64; entry_valid_nsec, attr_valid_nsec u32; attr
export const ATTR_OUT = 16 + ATTR // attr_valid u64, attr_valid_nsec u32, dummy u32, attr
export const OPEN_OUT = 16 // fh u64, open_flags u32, backing_id i32
export const WRITE_OUT = 8 // size u32, padding u32
export const STATFS_OUT = 80 // fuse_kstatfs
export const INIT_OUT = 64 // fuse_init_out since 7.23
export const DIRENT = 24 // fuse_dirent without the name: ino u64, off u64, namelen u32, type u32

/** Bytes one read of /dev/fuse needs for a given max_write (fuse_dev_do_read's check), page-rounded. */
export function readBufferBytes (maxWrite: number): number {
  return Math.max(MIN_READ_BUFFER, Math.ceil((IN_HEADER + WRITE_IN + maxWrite) / 4096) * 4096)
}

/** Reads a u64 field as a Number (uniques, node ids, offsets and sizes all stay below 2^53). */
export function u64 (b: Buffer, o: number): number {
  return b.readUInt32LE(o) + b.readUInt32LE(o + 4) * 0x100000000
}

export function putU64 (b: Buffer, o: number, v: number): void {
  b.writeUInt32LE(v % 0x100000000, o)
  b.writeUInt32LE(Math.floor(v / 0x100000000), o + 4)
}

/**
 * FUSE_NOTIFY_INVAL_INODE: a message the server writes unasked (unique 0, the notify code in
 * the error field) that drops the kernel's cached attributes of an inode (offset -1: no
 * page cache is touched). include/uapi/linux/fuse.h, fuse_notify_inval_inode_out.
 */
export const NOTIFY_INVAL_INODE = 2
export const NOTIFY_INVAL_INODE_OUT = 24 // ino u64, off i64, len i64

export function putOutHeader (b: Buffer, len: number, error: number, unique: number): void {
  b.writeUInt32LE(len, 0)
  b.writeInt32LE(error, 4)
  putU64(b, 8, unique)
}

/** What the request header says. */
export interface InHeader {
  len: number
  opcode: number
  unique: number
  nodeid: number
  uid: number
  gid: number
  pid: number
}

export function readInHeader (b: Buffer): InHeader {
  return {
    len: b.readUInt32LE(0),
    opcode: b.readUInt32LE(4),
    unique: u64(b, 8),
    nodeid: u64(b, 16),
    uid: b.readUInt32LE(24),
    gid: b.readUInt32LE(28),
    pid: b.readUInt32LE(32)
  }
}

export interface InitIn {
  major: number
  minor: number
  maxReadahead: number
  flags: number
  flags2: number
}

export function readInitIn (b: Buffer, o: number, len: number): InitIn {
  return {
    major: b.readUInt32LE(o),
    minor: b.readUInt32LE(o + 4),
    maxReadahead: b.readUInt32LE(o + 8),
    flags: b.readUInt32LE(o + 12),
    flags2: len >= o + 20 ? b.readUInt32LE(o + 16) : 0
  }
}

export interface InitOut {
  major: number
  minor: number
  maxReadahead: number
  flags: number
  maxBackground: number
  congestionThreshold: number
  maxWrite: number
  timeGran: number
  maxPages: number
}

export function putInitOut (b: Buffer, o: number, v: InitOut): void {
  b.fill(0, o, o + INIT_OUT)
  b.writeUInt32LE(v.major, o)
  b.writeUInt32LE(v.minor, o + 4)
  b.writeUInt32LE(v.maxReadahead, o + 8)
  b.writeUInt32LE(v.flags >>> 0, o + 12)
  b.writeUInt16LE(v.maxBackground, o + 16)
  b.writeUInt16LE(v.congestionThreshold, o + 18)
  b.writeUInt32LE(v.maxWrite, o + 20)
  b.writeUInt32LE(v.timeGran, o + 24)
  b.writeUInt16LE(v.maxPages, o + 28)
  // map_alignment u16, flags2 u32, unused: zero
}

export interface Attr {
  ino: number
  size: number
  blocks: number
  timeMs: number
  mode: number
  nlink: number
  uid: number
  gid: number
  blksize: number
}

export function putAttr (b: Buffer, o: number, a: Attr): void {
  b.fill(0, o, o + ATTR)
  putU64(b, o, a.ino)
  putU64(b, o + 8, a.size)
  putU64(b, o + 16, a.blocks)
  const s = Math.floor(a.timeMs / 1000)
  const ns = Math.round((a.timeMs - s * 1000) * 1e6)
  for (const k of [0, 8, 16]) putU64(b, o + 24 + k, s) // atime, mtime, ctime
  for (const k of [0, 4, 8]) b.writeUInt32LE(ns, o + 48 + k) // their nanoseconds
  b.writeUInt32LE(a.mode, o + 60)
  b.writeUInt32LE(a.nlink, o + 64)
  b.writeUInt32LE(a.uid, o + 68)
  b.writeUInt32LE(a.gid, o + 72)
  // rdev 0
  b.writeUInt32LE(a.blksize, o + 80)
  // flags 0
}

/** Directory entry types (the DT_* of dirent.h). */
export const DT_DIR = 4
export const DT_REG = 8

/** Bytes one directory entry takes in a READDIR reply. */
export function direntBytes (name: string): number {
  return (DIRENT + Buffer.byteLength(name) + 7) & ~7
}

export function putDirent (b: Buffer, o: number, ino: number, off: number, type: number, name: string): number {
  const n = Buffer.byteLength(name)
  const size = direntBytes(name)
  b.fill(0, o, o + size)
  putU64(b, o, ino)
  putU64(b, o + 8, off)
  b.writeUInt32LE(n, o + 16)
  b.writeUInt32LE(type, o + 20)
  b.write(name, o + DIRENT)
  return size
}
