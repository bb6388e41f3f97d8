import type { Logger } from '../../store/logger'
import { Errno, FsError, toErrno } from '../errno'
import type { Folder, ImageHandle, NodeAttr } from '../image-ops'
import {
  ATTR_OUT, DT_DIR, DT_REG, ENTRY_OUT, FOPEN_DIRECT_IO, FOPEN_PARALLEL_DIRECT_WRITES, Fattr, IN_HEADER, INIT_OUT, Init,
  KERNEL_MAJOR, MIN_MINOR, NOTIFY_INVAL_INODE, NOTIFY_INVAL_INODE_OUT, OPEN_OUT, OP_NAMES, OUR_MINOR, OUT_HEADER, Op, ROOT_ID, STATFS_OUT, WRITE_IN, WRITE_OUT,
  direntBytes, putAttr, putDirent, putInitOut, putOutHeader, putU64, readInitIn, u64
} from './protocol'

/** Where replies go: /dev/fuse in production (channel.ts), an array in unit tests. */
export interface ReplySink {
  /** Writes one reply. Never throws: a reply to a request the kernel dropped (interrupted, aborted) is ignored. */
  send (buf: Buffer, len: number): void
  /** Requests read from the kernel and not yet handed to the server (0 when unknown). */
  readonly queued?: number
}

export interface ServerOptions {
  log: Logger
  /** Largest write (and read) request the kernel may send; 1 MiB by default. */
  maxWrite?: number
  /** Requests the kernel may keep in the background (async reads, async direct I/O). */
  maxBackground?: number
  /** FOPEN_PARALLEL_DIRECT_WRITES on images opened for writing (default on). */
  parallelDirectWrites?: boolean
  /**
   * How long a READ, FLUSH or FSYNC must have been in flight before an INTERRUPT answers it
   * EINTR (default 3 s). Sooner would break callers whose signal handlers ask for restarted
   * system calls (SA_RESTART: Node, most shells): the kernel cannot restart a call the server
   * answered EINTR, so a SIGCHLD landing on a 1 ms read would fail it.
   */
  interruptGraceMs?: number
  /** Fault injection for tests: 'devfuse-slow-read' holds every READ 12 s. */
  faults?: ReadonlySet<string>
}

/** What was agreed with the kernel in INIT. */
export interface Negotiated {
  kernelMajor: number
  kernelMinor: number
  minor: number
  kernelFlags: number
  flags: number
  maxWrite: number
  maxPages: number
  maxBackground: number
}

interface Node { id: number, name: string, key: string, nlookup: number }
interface Inflight { opcode: number, answered: boolean, startMs: number, timer?: NodeJS.Timeout }

const UNKNOWN_INO = 0xffffffff // FUSE_UNKNOWN_INO of libfuse
const ENTRY_VALID_S = 1 // the kernel caches names and attributes for 1 s, as libfuse does by default
const SLOW_READ_MS = 12_000
const INTERRUPT_GRACE_MS = 3000
const EPROTO = -71

/**
 * A FUSE server for the kernel's protocol 7.28-7.38, serving a Folder. Requests come in as
 * raw buffers read from /dev/fuse (each with a release callback for its buffer) and are
 * answered through a ReplySink. It keeps no thread of its own: every request is handled on
 * the event loop, reads and writes run concurrently (as many as the kernel sends), and a
 * READ reply is built in place in the request's own buffer, so 1 MiB reads are not copied.
 */
export class FuseServer {
  negotiated: Negotiated | undefined
  /** Settles once INIT is answered (rejects when the kernel's protocol is too old). */
  readonly initialized: Promise<Negotiated>
  destroyed = false
  readonly stats = { requests: 0, maxInflight: 0, maxWriteBytes: 0, maxReadBytes: 0, writesWithCrcs: 0, interrupts: 0, interruptedEarly: 0, fallocateModes: {} as Record<string, number> }

  private readonly maxWrite: number
  private readonly maxBackground: number
  private readonly parallelWrites: boolean
  private readonly log: Logger
  private readonly faults: ReadonlySet<string>
  private readonly interruptGraceMs: number
  private readonly scratch = Buffer.alloc(64 * 1024)
  private readonly nodesById = new Map<number, Node>()
  private readonly nodesByKey = new Map<string, Node>()
  private nextNodeId = ROOT_ID + 1
  private readonly dirs = new Map<number, string[]>()
  private nextDirFh = 1
  private readonly inflight = new Map<number, Inflight>()
  private settleInit!: { resolve: (n: Negotiated) => void, reject: (err: Error) => void }
  private destroyListeners: Array<() => void> = []

  constructor (private readonly folder: Folder, private readonly sink: ReplySink, opts: ServerOptions) {
    this.log = opts.log
    this.maxWrite = opts.maxWrite ?? 1024 * 1024
    this.maxBackground = opts.maxBackground ?? 64
    this.parallelWrites = opts.parallelDirectWrites ?? true
    this.faults = opts.faults ?? new Set()
    this.interruptGraceMs = opts.interruptGraceMs ?? INTERRUPT_GRACE_MS
    this.initialized = new Promise((resolve, reject) => { this.settleInit = { resolve, reject } })
    this.initialized.catch(() => undefined) // a caller that never mounts must not see an unhandled rejection
  }

  /** Called once the kernel sent DESTROY and it was answered. */
  onDestroy (fn: () => void): void {
    this.destroyListeners.push(fn)
  }

  // ------------------------------------------------------------------ replies

  private replyError (unique: number, errno: number): void {
    putOutHeader(this.scratch, OUT_HEADER, errno, unique)
    this.sink.send(this.scratch, OUT_HEADER)
  }

  /** Reply with a payload that `fill` writes into the scratch buffer at offset 16. */
  private reply (unique: number, payloadBytes: number, fill?: (b: Buffer, o: number) => void): void {
    const b = this.scratch
    b.fill(0, OUT_HEADER, OUT_HEADER + payloadBytes)
    fill?.(b, OUT_HEADER)
    putOutHeader(b, OUT_HEADER + payloadBytes, 0, unique)
    this.sink.send(b, OUT_HEADER + payloadBytes)
  }

  private replyAttr (unique: number, id: number, a: NodeAttr): void {
    this.reply(unique, ATTR_OUT, (b, o) => {
      putU64(b, o, ENTRY_VALID_S) // attr_valid
      this.putNodeAttr(b, o + 16, id, a)
    })
  }

  private putNodeAttr (b: Buffer, o: number, id: number, a: NodeAttr): void {
    putAttr(b, o, {
      ino: id,
      size: a.size,
      blocks: a.dir ? 8 : Math.ceil(a.size / 512),
      timeMs: a.timeMs,
      mode: a.mode,
      nlink: a.nlink,
      uid: this.folder.uid,
      gid: this.folder.gid,
      blksize: a.blockBytes
    })
  }

  /**
   * Drops the kernel's cached attributes of every image it knows (a resize changed their
   * size): the next stat, and `losetup -c`, ask again. A node the kernel forgot meanwhile
   * answers ENOENT, which the sink ignores.
   */
  invalidateAttributes (): void {
    if (!this.negotiated || this.destroyed) return
    const b = Buffer.alloc(OUT_HEADER + NOTIFY_INVAL_INODE_OUT)
    for (const id of this.nodesById.keys()) {
      putOutHeader(b, b.length, NOTIFY_INVAL_INODE, 0)
      putU64(b, OUT_HEADER, id)
      b.writeBigInt64LE(-1n, OUT_HEADER + 8) // attributes only
      b.writeBigInt64LE(0n, OUT_HEADER + 16)
      this.sink.send(b, b.length)
    }
  }

  // ------------------------------------------------------------------ inodes

  /** The name a node id stands for (undefined: the root); ENOENT for ids the kernel should no longer hold. */
  private nameOf (nodeid: number): string | undefined {
    if (nodeid === ROOT_ID) return undefined
    const node = this.nodesById.get(nodeid)
    if (!node) throw new FsError(Errno.ENOENT)
    return node.name
  }

  /** Attributes of a node, ENOENT if what it named is gone (a deleted snapshot). */
  private attrOf (nodeid: number): NodeAttr {
    if (nodeid === ROOT_ID) return this.folder.attr()
    const node = this.nodesById.get(nodeid)
    if (!node) throw new FsError(Errno.ENOENT)
    const a = this.folder.attr(node.name)
    if (a.key !== node.key) throw new FsError(Errno.ENOENT)
    return a
  }

  private nodeFor (name: string, a: NodeAttr): Node {
    let node = this.nodesByKey.get(a.key)
    if (!node) {
      node = { id: this.nextNodeId++, name, key: a.key, nlookup: 0 }
      this.nodesByKey.set(a.key, node)
      this.nodesById.set(node.id, node)
    }
    return node
  }

  private forget (nodeid: number, n: number): void {
    const node = this.nodesById.get(nodeid)
    if (!node) return
    node.nlookup = Math.max(0, node.nlookup - n)
    if (node.nlookup > 0) return
    let gone = false
    try { gone = this.folder.attr(node.name).key !== node.key } catch { gone = true }
    if (gone) {
      this.nodesById.delete(node.id)
      this.nodesByKey.delete(node.key)
    }
  }

  // ------------------------------------------------------------------ dispatch

  /**
   * Handles one request of `n` bytes in `req`. `req` must be at least 16 + max_write bytes
   * long (READ replies are built in it); `release` gives the buffer back once it is no longer
   * needed, which for READ and WRITE is after the store is done with it.
   */
  dispatch (req: Buffer, n: number, release: () => void, blockCrcs?: Uint32Array): void {
    this.stats.requests++
    if (n < IN_HEADER || req.readUInt32LE(0) !== n) {
      this.log.error({ bytes: n, len: n >= 4 ? req.readUInt32LE(0) : -1 }, 'malformed FUSE request ignored')
      return release()
    }
    const opcode = req.readUInt32LE(4)
    const unique = u64(req, 8)
    const nodeid = u64(req, 16)
    if (this.destroyed && opcode !== Op.INTERRUPT) {
      this.replyError(unique, Errno.ENODEV)
      return release()
    }
    try {
      switch (opcode) {
        case Op.READ: return this.read(req, unique, release)
        case Op.WRITE: return this.write(req, n, unique, release, blockCrcs)
        case Op.INIT: this.init(req, n, unique); break
        case Op.LOOKUP: this.lookup(req, n, unique, nodeid); break
        case Op.FORGET: this.forget(nodeid, u64(req, IN_HEADER)); break
        case Op.BATCH_FORGET: {
          const count = req.readUInt32LE(IN_HEADER)
          for (let i = 0, o = IN_HEADER + 8; i < count && o + 16 <= n; i++, o += 16) this.forget(u64(req, o), u64(req, o + 8))
          break
        }
        case Op.GETATTR: this.replyAttr(unique, nodeid, this.attrOf(nodeid)); break
        case Op.SETATTR: this.setattr(req, unique, nodeid); break
        case Op.ACCESS: this.folder.access(this.nameOf(nodeid), req.readUInt32LE(IN_HEADER)); this.reply(unique, 0); break
        case Op.OPEN: this.open(req, unique, nodeid); break
        case Op.RELEASE: {
          const fh = u64(req, IN_HEADER)
          try { this.folder.release(this.folder.handle(fh)) } catch { /* released already */ }
          this.reply(unique, 0)
          break
        }
        case Op.FLUSH: return this.withHandle(req, unique, release, h => this.folder.flush(h))
        case Op.FSYNC: return this.withHandle(req, unique, release, h => this.folder.fsync(h))
        case Op.FALLOCATE: {
          const offset = u64(req, IN_HEADER + 8)
          const length = u64(req, IN_HEADER + 16)
          const mode = req.readUInt32LE(IN_HEADER + 24)
          const m = `0x${mode.toString(16)}`
          this.stats.fallocateModes[m] = (this.stats.fallocateModes[m] ?? 0) + 1
          return this.withHandle(req, unique, release, h => this.folder.fallocate(h, mode, offset, length))
        }
        case Op.STATFS: this.statfs(unique); break
        case Op.OPENDIR: this.opendir(unique, nodeid); break
        case Op.READDIR: this.readdir(req, unique); break
        case Op.RELEASEDIR: this.dirs.delete(u64(req, IN_HEADER)); this.reply(unique, 0); break
        case Op.FSYNCDIR: this.reply(unique, 0); break
        case Op.INTERRUPT: this.interrupt(u64(req, IN_HEADER), unique); break
        case Op.DESTROY: return this.destroy(unique, release)
        default:
          // Not an image operation (create, unlink, xattrs, locks, ...): the kernel remembers
          // ENOSYS for most and stops asking, as it does with libfuse.
          this.replyError(unique, Errno.ENOSYS)
      }
    } catch (err) {
      this.replyError(unique, errnoOf(err))
    }
    release()
  }

  private init (req: Buffer, n: number, unique: number): void {
    const k = readInitIn(req, IN_HEADER, n)
    if (k.major > KERNEL_MAJOR) {
      // The kernel speaks a newer major: answer ours only and wait for a second INIT.
      this.reply(unique, INIT_OUT, (b, o) => putInitOut(b, o, { major: KERNEL_MAJOR, minor: OUR_MINOR, maxReadahead: 0, flags: 0, maxBackground: 0, congestionThreshold: 0, maxWrite: 0, timeGran: 0, maxPages: 0 }))
      return
    }
    if (k.major < KERNEL_MAJOR || k.minor < MIN_MINOR) {
      this.replyError(unique, EPROTO)
      this.settleInit.reject(new Error(`the kernel speaks FUSE ${k.major}.${k.minor}; the /dev/fuse transport needs 7.${MIN_MINOR} or later (use --transport fuse-native)`))
      return
    }
    const minor = Math.min(k.minor, OUR_MINOR)
    const wanted = Init.ASYNC_READ | Init.BIG_WRITES | Init.ASYNC_DIO | Init.PARALLEL_DIROPS | Init.MAX_PAGES
    const flags = (wanted & k.flags) >>> 0
    // Without MAX_PAGES the kernel caps requests at 32 pages whatever max_write says.
    const maxWrite = (flags & Init.MAX_PAGES) !== 0 ? this.maxWrite : Math.min(this.maxWrite, 32 * 4096)
    const maxPages = Math.ceil(maxWrite / 4096)
    const negotiated: Negotiated = {
      kernelMajor: k.major, kernelMinor: k.minor, minor, kernelFlags: k.flags >>> 0, flags, maxWrite, maxPages, maxBackground: this.maxBackground
    }
    this.reply(unique, INIT_OUT, (b, o) => putInitOut(b, o, {
      major: KERNEL_MAJOR,
      minor,
      maxReadahead: k.maxReadahead,
      flags,
      maxBackground: this.maxBackground,
      congestionThreshold: Math.floor(this.maxBackground * 3 / 4),
      maxWrite,
      timeGran: 1,
      maxPages
    }))
    this.negotiated = negotiated
    this.settleInit.resolve(negotiated)
  }

  private lookup (req: Buffer, n: number, unique: number, parent: number): void {
    if (parent !== ROOT_ID) return this.replyError(unique, Errno.ENOTDIR)
    const nul = req.indexOf(0, IN_HEADER)
    const name = req.toString('utf8', IN_HEADER, nul >= 0 && nul < n ? nul : n)
    const a = this.folder.attr(name)
    const node = this.nodeFor(name, a)
    node.nlookup++
    this.reply(unique, ENTRY_OUT, (b, o) => {
      putU64(b, o, node.id)
      putU64(b, o + 8, 0) // generation
      putU64(b, o + 16, ENTRY_VALID_S)
      putU64(b, o + 24, ENTRY_VALID_S)
      this.putNodeAttr(b, o + 40, node.id, a)
    })
  }

  private setattr (req: Buffer, unique: number, nodeid: number): void {
    const o = IN_HEADER
    const valid = req.readUInt32LE(o)
    const name = this.nameOf(nodeid)
    if ((valid & Fattr.MODE) !== 0) this.folder.chmod(name)
    if ((valid & (Fattr.UID | Fattr.GID)) !== 0) this.folder.chown(name)
    if ((valid & Fattr.SIZE) !== 0) {
      if (name === undefined) throw new FsError(Errno.EISDIR)
      this.folder.truncate(name, u64(req, o + 16))
    }
    if ((valid & (Fattr.ATIME | Fattr.MTIME | Fattr.ATIME_NOW | Fattr.MTIME_NOW | Fattr.CTIME)) !== 0 && name !== undefined) this.folder.utimens(name)
    this.replyAttr(unique, nodeid, this.attrOf(nodeid))
  }

  private open (req: Buffer, unique: number, nodeid: number): void {
    const name = this.nameOf(nodeid)
    if (name === undefined) return this.replyError(unique, Errno.EISDIR)
    this.attrOf(nodeid) // a stale node is ENOENT, not the image that now has its name
    const handle = this.folder.open(name, req.readUInt32LE(IN_HEADER))
    const flags = FOPEN_DIRECT_IO | (handle.writable && this.parallelWrites ? FOPEN_PARALLEL_DIRECT_WRITES : 0)
    this.reply(unique, OPEN_OUT, (b, o) => {
      putU64(b, o, handle.id)
      b.writeUInt32LE(flags, o + 8)
    })
  }

  /** The open image of `fh`; undefined after answering the request's error (EBADF) and releasing its slot. */
  private openHandle (fh: number, unique: number, release: () => void): ImageHandle | undefined {
    try {
      return this.folder.handle(fh)
    } catch (err) {
      this.replyError(unique, errnoOf(err))
      release()
      return undefined
    }
  }

  private read (req: Buffer, unique: number, release: () => void): void {
    const fh = u64(req, IN_HEADER)
    const offset = u64(req, IN_HEADER + 8)
    const size = Math.min(req.readUInt32LE(IN_HEADER + 16), req.length - OUT_HEADER)
    if (size > this.stats.maxReadBytes) this.stats.maxReadBytes = size
    const handle = this.openHandle(fh, unique, release)
    if (!handle) return
    const state = this.track(unique, Op.READ)
    // The data lands after room for the reply header, in the request's own buffer.
    const into = req.subarray(OUT_HEADER, OUT_HEADER + size)
    const opts = { inline: this.alone() }
    const reading = this.faults.has('devfuse-slow-read')
      ? new Promise<void>(resolve => setTimeout(resolve, SLOW_READ_MS)).then(() => this.folder.read(handle, offset, into, opts))
      : this.folder.read(handle, offset, into, opts)
    reading.then(got => {
      if (this.untrack(unique, state)) {
        putOutHeader(req, OUT_HEADER + got, 0, unique)
        this.sink.send(req, OUT_HEADER + got)
      }
      release()
    }, err => {
      if (this.untrack(unique, state)) this.replyError(unique, errnoOf(err))
      release()
    })
  }

  private write (req: Buffer, n: number, unique: number, release: () => void, blockCrcs?: Uint32Array): void {
    const fh = u64(req, IN_HEADER)
    const offset = u64(req, IN_HEADER + 8)
    const size = req.readUInt32LE(IN_HEADER + 16)
    const data = IN_HEADER + WRITE_IN
    if (data + size > n) {
      this.replyError(unique, Errno.EINVAL)
      return release()
    }
    if (size > this.stats.maxWriteBytes) this.stats.maxWriteBytes = size
    if (blockCrcs !== undefined) this.stats.writesWithCrcs++
    const handle = this.openHandle(fh, unique, release)
    if (!handle) return
    const state = this.track(unique, Op.WRITE)
    const opts = { inline: this.alone() }
    this.folder.write(handle, offset, req.subarray(data, data + size), blockCrcs, opts).then(wrote => {
      release()
      if (this.untrack(unique, state)) this.reply(unique, WRITE_OUT, (b, o) => b.writeUInt32LE(wrote, o))
    }, err => {
      release()
      if (this.untrack(unique, state)) this.replyError(unique, errnoOf(err))
    })
  }

  /** FLUSH, FSYNC, FALLOCATE: a file handle first, an empty reply when done. */
  private withHandle (req: Buffer, unique: number, release: () => void, op: (h: ImageHandle) => Promise<void>): void {
    const opcode = req.readUInt32LE(4)
    let handle: ImageHandle
    try {
      handle = this.folder.handle(u64(req, IN_HEADER))
    } catch (err) {
      this.replyError(unique, errnoOf(err))
      return release()
    }
    release() // every argument is read
    const state = this.track(unique, opcode)
    op(handle).then(() => {
      if (this.untrack(unique, state)) this.reply(unique, 0)
    }, err => {
      if (this.untrack(unique, state)) this.replyError(unique, errnoOf(err))
    })
  }

  private statfs (unique: number): void {
    const s = this.folder.statfs()
    this.reply(unique, STATFS_OUT, (b, o) => {
      putU64(b, o, s.blocks)
      putU64(b, o + 8, s.bfree)
      putU64(b, o + 16, s.bavail)
      putU64(b, o + 24, s.files)
      putU64(b, o + 32, s.ffree)
      b.writeUInt32LE(s.bsize, o + 40)
      b.writeUInt32LE(s.namemax, o + 44)
      b.writeUInt32LE(s.frsize, o + 48)
    })
  }

  /** The listing is taken once per opendir, so a snapshot made meanwhile cannot shift the offsets. */
  private opendir (unique: number, nodeid: number): void {
    if (nodeid !== ROOT_ID) {
      this.attrOf(nodeid)
      return this.replyError(unique, Errno.ENOTDIR)
    }
    const fh = this.nextDirFh++
    this.dirs.set(fh, ['.', '..', ...this.folder.list()])
    this.reply(unique, OPEN_OUT, (b, o) => putU64(b, o, fh))
  }

  private readdir (req: Buffer, unique: number): void {
    const names = this.dirs.get(u64(req, IN_HEADER))
    if (!names) return this.replyError(unique, Errno.EBADF)
    const offset = u64(req, IN_HEADER + 8)
    const size = Math.min(req.readUInt32LE(IN_HEADER + 16), this.scratch.length - OUT_HEADER)
    let bytes = 0
    let last = offset
    for (let i = offset; i < names.length && bytes + direntBytes(names[i]) <= size; i++, last = i) bytes += direntBytes(names[i])
    this.reply(unique, bytes, (b, o) => {
      for (let i = offset; i < last; i++) {
        const name = names[i]
        let ino = ROOT_ID
        let type = DT_DIR
        if (i >= 2) {
          // The node id once looked up, else "unknown" as libfuse says it: no node is made
          // here, so listing a folder of many snapshots keeps no state.
          type = DT_REG
          let key: string | undefined
          try { key = this.folder.attr(name).key } catch { /* deleted since opendir */ }
          ino = (key !== undefined ? this.nodesByKey.get(key)?.id : undefined) ?? UNKNOWN_INO
        }
        o += putDirent(b, o, ino, i + 1, type, name)
      }
    })
  }

  // ------------------------------------------------------------------ interrupts

  /**
   * Whether the request just tracked is the only one in flight and none waits behind it: then
   * its system call is made on this thread (IoOptions.inline), nothing else waiting for the
   * event loop meanwhile. Requests queued but not yet handed over count: without them, each
   * inline request would end before the next was seen, and at depth 16 every read would
   * wait for the one before it (measured: 0.6x the IOPS on reads from disk).
   */
  private alone (): boolean {
    return this.inflight.size === 1 && (this.sink.queued ?? 0) === 0
  }

  private track (unique: number, opcode: number): Inflight {
    const state: Inflight = { opcode, answered: false, startMs: Date.now() }
    this.inflight.set(unique, state)
    if (this.inflight.size > this.stats.maxInflight) this.stats.maxInflight = this.inflight.size
    return state
  }

  /** True if the request still needs its answer (it was not answered early on INTERRUPT). */
  private untrack (unique: number, state: Inflight): boolean {
    if (this.inflight.get(unique) === state) this.inflight.delete(unique)
    if (state.timer) clearTimeout(state.timer)
    return !state.answered
  }

  /**
   * INTERRUPT (the caller got a signal while waiting). A request that only waits (READ,
   * FLUSH, FSYNC) and has been in flight for the grace time (3 s: a cold block fetched from
   * an archive, a stuck volume) is answered EINTR then; its work still finishes and its late
   * answer is dropped. One that finishes sooner answers normally, so a caller whose handler
   * asked for restarted calls never sees a spurious EINTR. WRITE and FALLOCATE run to
   * completion and answer normally: their effect cannot be taken back, and EINTR would tell
   * the caller nothing was written. An interrupt for a request this server has not seen yet
   * (read by another reader thread, still on its way) is answered EAGAIN, and the kernel
   * sends it again; for one already answered, the kernel ignores the EAGAIN.
   * Fatal signals need none of this: the kernel stops waiting for the answer by itself.
   */
  private interrupt (target: number, unique: number): void {
    this.stats.interrupts++
    const state = this.inflight.get(target)
    if (!state) {
      this.replyError(unique, Errno.EAGAIN)
      return
    }
    if (state.timer || !(state.opcode === Op.READ || state.opcode === Op.FLUSH || state.opcode === Op.FSYNC)) {
      return // Otherwise the interrupt itself gets no reply (only EAGAIN or ENOSYS mean something to the kernel).
    }
    const answer = (): void => {
      if (state.answered || this.inflight.get(target) !== state) return
      state.answered = true
      this.inflight.delete(target)
      this.stats.interruptedEarly++
      this.log.info({ op: OP_NAMES[state.opcode], unique: target, ms: Date.now() - state.startMs }, 'request interrupted: answered EINTR')
      this.replyError(target, Errno.EINTR)
    }
    const wait = state.startMs + this.interruptGraceMs - Date.now()
    if (wait <= 0) return answer()
    state.timer = setTimeout(answer, wait)
    state.timer.unref()
  }

  /**
   * DESTROY: the kernel is tearing the connection down (sent for fuseblk mounts and by some
   * kernels on unmount). Everything written becomes durable before the answer; later requests
   * get ENODEV.
   */
  private destroy (unique: number, release: () => void): void {
    release()
    this.destroyed = true
    this.log.info({ stats: this.stats }, 'DESTROY: flushing, then the session ends')
    this.folder.destroy().then(() => this.reply(unique, 0), err => {
      this.log.error({ err: (err as Error).message }, 'flush on DESTROY failed')
      this.replyError(unique, errnoOf(err))
    }).finally(() => {
      for (const fn of this.destroyListeners) fn()
    })
  }
}

const errnoOf = toErrno
