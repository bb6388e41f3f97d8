import fs from 'node:fs'
import { Worker } from 'node:worker_threads'
import type { Logger } from '../../store/logger'
import { fastBlockCrcs } from '../../store/crc'
import { addonPath } from '../../store/native-addon'
import { IN_HEADER, Op, WRITE_IN } from './protocol'
import type { ReplySink } from './server'

/**
 * The open /dev/fuse file and the threads that read requests from it.
 *
 * Reading /dev/fuse blocks until the kernel has a request, so reads cannot happen on the event
 * loop. `readers` worker threads each loop on a blocking read(2) into slots of one
 * SharedArrayBuffer and post "slot i holds n bytes" to the main thread, which handles the
 * request there and gives the slot back when done (../shared/fastpath measured this against
 * reads in libuv's threadpool: 30.2k vs 24.5k random 4 KiB writes at depth 16). Several
 * reads pending at once is what lets the kernel hand out several requests at once. Replies
 * are written from the main thread with one write(2) each; /dev/fuse never blocks a write.
 *
 * A slot is free (state 0), or taken (state 1) by the reader that reads into it and then by
 * the main thread while a request is in it. The readers share every slot and one count of
 * free ones, on which they wait when all are busy; a reader takes the lowest free slot, so
 * the slots ever touched (resident memory: a 1 MiB WRITE touches a whole slot) are as many
 * as were busy at once -- requests in flight plus one per reader waiting in read(2) -- not
 * every slot of every reader (each reader had 8 slots of its own, and over a benchmark all 32
 * became resident). Memory is bounded: readers x slotsPerReader x bufferBytes.
 */
export interface ChannelOptions {
  readers: number
  slotsPerReader: number
  /** Bytes per slot: at least protocol.readBufferBytes(max_write). */
  bufferBytes: number
  /**
   * When set, a reader computes the CRC32C of every block of this size of a block-aligned
   * WRITE's data right after reading it, on its own thread: the store needs them for the
   * entry's header, and the event loop, which every request waits for, is then spared that
   * work (a tenth of a sequential write's time there). 0: none.
   */
  crcBlockBytes?: number
  log: Logger
}

/** What ended the channel: ENODEV after unmount or abort, or another read error. */
export type EndReason = string

/** Gets each request with the callback that frees its buffer, and for a block-aligned WRITE maybe its blocks' CRC32Cs. */
export type RequestHandler = (req: Buffer, n: number, release: () => void, blockCrcs?: Uint32Array) => void

/**
 * How requests come off /dev/fuse and replies go back: reader threads (DevFuseChannel, here)
 * or the event loop polling the descriptor (PolledChannel, polled-channel.ts).
 */
export interface RequestChannel extends ReplySink {
  readonly fd: number
  /** Settles when the connection ended (unmount, abort, a read error) or stop() was called. */
  readonly ended: Promise<EndReason>
  /** Sets the handler; reading may begin (the reader threads wait out EPERM until the mount exists). */
  start (onRequest: RequestHandler): void
  /** Called once mount(8) made the mount: from here reads can succeed. */
  mounted (): void
  /** How many request buffers ever held a request (resident memory). */
  readonly slotsTouched: number
  /** Threads still blocked in read(2): while any is, the process must not exit (mount.ts). */
  readonly readersAlive: number
  /** Counters of how requests were read, for the session statistics in the log. */
  readonly stats?: Readonly<Record<string, number>>
  stop (): void
}

const SLOT_SHIFT = 4194304 // message = slot * SLOT_SHIFT + bytes; a slot holds under 4 MiB

// The reader's WRITE check reads these offsets (protocol.ts): opcode, then fuse_write_in's offset and size, then the data.
const OPCODE_AT = 4
const WRITE_OFFSET_AT = IN_HEADER + 8
const WRITE_SIZE_AT = IN_HEADER + 16
const WRITE_DATA_AT = IN_HEADER + WRITE_IN

const READER_SOURCE = `
const { workerData, parentPort } = require('node:worker_threads')
const fs = require('node:fs')
const { fd, data, ctl, bytes, nslots, crcs, crcBlockBytes, crcStride, crcModule, crcAddon } = workerData
const st = new Int32Array(ctl)
const free = nslots
const stop = nslots + 1
const posted = nslots + 2
const views = []
for (let k = 0; k < nslots; k++) views.push(new Uint8Array(data, k * bytes, bytes))
const B = crcBlockBytes
const crc32c = B > 0 ? require(crcModule).crc32c : undefined
const fast = B > 0 && crcAddon !== undefined ? require(crcAddon) : undefined // native/block-crc.c: four blocks at a time
const crcArea = B > 0 ? new Uint32Array(crcs) : undefined
const bufs = views.map(v => Buffer.from(v.buffer, v.byteOffset, v.byteLength))
// A block-aligned WRITE: the CRC32C of each block of its data, count first (0: none).
function blockCrcs (slot, buf, n) {
  const at = slot * crcStride
  crcArea[at] = 0
  if (n < ${WRITE_DATA_AT} || buf.readUInt32LE(${OPCODE_AT}) !== ${Op.WRITE}) return
  const offset = buf.readUInt32LE(${WRITE_OFFSET_AT}) + buf.readUInt32LE(${WRITE_OFFSET_AT + 4}) * 4294967296
  const size = buf.readUInt32LE(${WRITE_SIZE_AT})
  if (offset % B !== 0 || size % B !== 0 || size === 0 || ${WRITE_DATA_AT} + size > n || size / B >= crcStride) return
  if (fast !== undefined) fast.blockCrcs(buf.subarray(${WRITE_DATA_AT}, ${WRITE_DATA_AT} + size), B, crcArea.subarray(at + 1, at + 1 + size / B))
  else for (let i = 0, o = ${WRITE_DATA_AT}; o < ${WRITE_DATA_AT} + size; i++, o += B) crcArea[at + 1 + i] = crc32c(buf.subarray(o, o + B)) >>> 0
  crcArea[at] = size / B
}
const nap = new Int32Array(new SharedArrayBuffer(4))
for (;;) {
  // Claim one of the free slots (the count), then take the lowest free one: one is there for
  // every claim, and the same few buffers are reused at low depth (resident memory grows with
  // depth, not with time).
  for (;;) {
    if (Atomics.load(st, stop) !== 0) process.exit(0)
    const f = Atomics.load(st, free)
    if (f === 0) { Atomics.wait(st, free, 0, 1000); continue }
    if (Atomics.compareExchange(st, free, f, f - 1) === f) break
  }
  let k = 0
  while (Atomics.compareExchange(st, k, 0, 1) !== 0) k = (k + 1) % nslots
  const slot = k
  let n = -1
  while (n < 0) {
    if (Atomics.load(st, stop) !== 0) process.exit(0)
    try {
      n = fs.readSync(fd, views[slot], 0, bytes, null)
    } catch (e) {
      // EPERM: not mounted yet. ENOENT: the request was interrupted before we read it. EINTR, EAGAIN: try again.
      if (e.code === 'EPERM') { Atomics.wait(nap, 0, 0, 2); continue }
      if (e.code === 'ENOENT' || e.code === 'EINTR' || e.code === 'EAGAIN') continue
      parentPort.postMessage({ end: e.code || String(e) })
      process.exit(0)
    }
  }
  if (B > 0) blockCrcs(slot, bufs[slot], n)
  Atomics.add(st, posted, 1)
  parentPort.postMessage(slot * ${SLOT_SHIFT} + n)
}
`

/**
 * Writes one reply to /dev/fuse: one write(2) of header and payload, from the event loop
 * (a reply never blocks). Errors that only mean the kernel no longer waits are ignored.
 */
export function sendReply (fd: number, buf: Buffer, len: number, log: Logger): void {
  try {
    fs.writeSync(fd, buf, 0, len, null)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    // ENOENT: the request is gone (interrupted and answered, or aborted). ENODEV: unmounted.
    if (code !== 'ENOENT' && code !== 'ENODEV') log.error({ err: (err as Error).message, bytes: len }, 'reply to /dev/fuse refused')
  }
}

export class DevFuseChannel implements RequestChannel {
  readonly fd: number
  private readonly workers: Worker[] = []
  private readonly slots: Buffer[] = []
  private readonly state: Int32Array
  private readonly nslots: number
  private readonly log: Logger
  private live = 0
  private endReason: EndReason | undefined
  private closed = false
  readonly ended: Promise<EndReason>
  private settle!: (reason: EndReason) => void
  private readonly releasers: Array<() => void> = []
  private readonly touched = new Set<number>()
  /** Requests handed to onRequest, all told (wrapping as the readers' count does). */
  private handed = 0
  private readonly dataBuffer: SharedArrayBuffer
  /** Per slot: how many block CRCs the reader computed (0: none), then the CRCs (see crcBlockBytes). */
  private readonly crcs: Uint32Array
  private readonly crcStride: number

  constructor (private readonly opts: ChannelOptions) {
    if (opts.bufferBytes >= SLOT_SHIFT) throw new Error(`slot of ${opts.bufferBytes} bytes is too big`)
    this.log = opts.log
    // O_CLOEXEC (libuv adds it): no child process may inherit the connection, or the mount
    // would outlive this process hung instead of failing fast (native-notes/devfuse.md).
    this.fd = fs.openSync('/dev/fuse', fs.constants.O_RDWR)
    this.nslots = opts.readers * opts.slotsPerReader
    const data = new SharedArrayBuffer(this.nslots * opts.bufferBytes)
    // One state per slot, then the count of free slots, the stop flag, and the count of
    // requests the readers posted (all told, wrapping at 2^32 like `handed`).
    this.state = new Int32Array(new SharedArrayBuffer((this.nslots + 3) * 4))
    for (let i = 0; i < this.nslots; i++) {
      this.slots.push(Buffer.from(data, i * opts.bufferBytes, opts.bufferBytes))
      this.releasers.push(() => {
        Atomics.store(this.state, i, 0)
        Atomics.add(this.state, this.nslots, 1)
        Atomics.notify(this.state, this.nslots, 1)
      })
    }
    this.state[this.nslots] = this.nslots
    this.ended = new Promise(resolve => { this.settle = resolve })
    this.dataBuffer = data
    const crcBlockBytes = opts.crcBlockBytes ?? 0
    this.crcStride = crcBlockBytes > 0 ? 1 + Math.ceil(opts.bufferBytes / crcBlockBytes) : 0
    this.crcs = new Uint32Array(new SharedArrayBuffer(Math.max(4, this.nslots * this.crcStride * 4)))
  }

  /**
   * Starts the readers; `onRequest` gets each request with the callback that frees its slot,
   * and for a block-aligned WRITE the CRC32C of each block of its data (crcBlockBytes).
   */
  start (onRequest: RequestHandler): void {
    const { readers, bufferBytes } = this.opts
    for (let r = 0; r < readers; r++) {
      const worker = new Worker(READER_SOURCE, {
        eval: true,
        // A reader only loops on read(2): a small heap is plenty.
        resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 2 },
        workerData: { fd: this.fd, data: this.dataBuffer, ctl: this.state.buffer, bytes: bufferBytes, nslots: this.nslots, crcs: this.crcs.buffer, crcBlockBytes: this.opts.crcBlockBytes ?? 0, crcStride: this.crcStride, crcModule: require.resolve('@node-rs/crc32'), crcAddon: fastBlockCrcs && (this.opts.crcBlockBytes ?? 0) % 8 === 0 ? addonPath('block-crc') : undefined },
        stdout: false,
        stderr: false
      })
      this.live++
      worker.on('message', (m: number | { end: string }) => {
        if (typeof m === 'number') {
          this.handed = (this.handed + 1) | 0
          const slot = Math.floor(m / SLOT_SHIFT)
          if (!this.touched.has(slot)) this.touched.add(slot)
          let released = false
          const at = slot * this.crcStride
          // A copy: the slot's CRCs are the reader's again once the slot is released.
          const crcs = this.crcStride > 0 && this.crcs[at] > 0 ? this.crcs.slice(at + 1, at + 1 + this.crcs[at]) : undefined
          onRequest(this.slots[slot], m - slot * SLOT_SHIFT, () => {
            if (released) return
            released = true
            this.releasers[slot]()
          }, crcs)
        } else {
          this.endReason ??= m.end
        }
      })
      worker.on('error', err => {
        this.log.error({ err: err.message }, '/dev/fuse reader failed')
        this.endReason ??= err.message
      })
      worker.on('exit', () => {
        if (--this.live === 0) this.finish()
      })
      // Not unref'd: while the mount lives, the process must (a process that ends its event
      // loop with a live mount would sit in exit with its readers blocked in read(2), the
      // kernel waiting for answers it will never get).
      this.workers.push(worker)
    }
  }

  /** The readers began at start() and wait out EPERM themselves. */
  mounted (): void {}

  /** Requests the readers read and posted that the main thread has not handed over yet. */
  get queued (): number {
    return (Atomics.load(this.state, this.nslots + 2) - this.handed) | 0
  }

  /** How many slots ever held a request: their buffers are resident (at most requests in flight + readers). */
  get slotsTouched (): number {
    return this.touched.size
  }

  /** Reader threads still running: while any is, the process must not exit (see mount.ts). */
  get readersAlive (): number {
    return this.live
  }

  private finish (): void {
    if (!this.closed) {
      this.closed = true
      try { fs.closeSync(this.fd) } catch { /* closed */ }
    }
    this.settle(this.endReason ?? 'stopped')
  }

  send (buf: Buffer, len: number): void {
    if (!this.closed) sendReply(this.fd, buf, len, this.log)
  }

  /**
   * Stops reading. Readers blocked in read(2) leave when the connection ends (unmount) or the
   * process exits; the fd is closed only after every reader has left, so its number cannot
   * be reused under a pending read.
   */
  stop (): void {
    Atomics.store(this.state, this.nslots + 1, 1)
    Atomics.notify(this.state, this.nslots)
  }
}
