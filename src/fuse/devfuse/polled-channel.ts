import fs from 'node:fs'
import type { Logger } from '../../store/logger'
import { loadAddon } from '../../store/native-addon'
import { sendReply, type EndReason, type RequestChannel, type RequestHandler } from './channel'
import { SkipBackoff } from './skip-backoff'

/**
 * The open /dev/fuse file read on the event loop itself: /dev/fuse can be polled (the kernel's
 * fuse_dev_poll), so libuv can wait for it beside every other file and socket, and a request
 * reaches the handler with no thread in between. The reader threads of channel.ts cost a
 * thread wake-up per request on top of the kernel's (the reader wakes in read(2), then wakes
 * the event loop): measured with ../shared/fastpath's passthrough, reading here took random
 * 4 KiB reads at depth 1 from ~5,150 to ~9,200 IOPS and both random reads and writes at depth
 * 16 up by ~17 % (README, Benchmark), and it saves the readers' isolates (~8 MiB resident each).
 *
 * Node has no public API to poll an arbitrary descriptor, so this uses the pipe handle Node's
 * own `net` module is built on (`process.binding('pipe_wrap')`: libuv's uv_pipe_open accepts any
 * pollable descriptor and reads it with read(2) when epoll says it is readable). It is Node's
 * internal binding, on the documented allow-list of process.binding (DEP0111, deprecated in
 * documentation only); when it is missing, `pollingAvailable()` says so and the mount uses the
 * reader threads. libuv reads into one buffer of ours (a /dev/fuse read must offer room for
 * the largest request, more than the 64 KiB libuv would offer): a free slot, and the read
 * callback returns the slot the next read goes into (Node's CustomBufferJSListener takes the
 * buffer the callback returns, as `net`'s `onread.buffer` function relies on). When every
 * slot is busy, reading pauses with a spare buffer armed; the one request read into it on
 * resuming is copied into the slot freed meanwhile.
 *
 * A read error stops libuv's reading of the handle for good: ENODEV or ECONNABORTED (unmounted
 * or aborted) ends the channel. The kernel fails a read of a connection being aborted with
 * ENOENT, and a signal may interrupt one (EINTR): then a new handle is opened on the same
 * descriptor (the stopped one is left open: closing it would close the descriptor).
 */

interface PipeHandle {
  open (fd: number): number
  useUserBuffer (buf: Buffer): void
  readStart (): number
  readStop (): number
  onread: (() => void) | null
}
interface PipeBinding {
  Pipe: new (type: number) => PipeHandle
  socketType: number
  state: Int32Array
  bytesAt: number
}

let binding: PipeBinding | null | undefined
/** Node's pipe handle binding, or null where this Node has none. */
function pipeBinding (): PipeBinding | null {
  if (binding !== undefined) return binding
  binding = null
  try {
    const getBinding = (process as unknown as { binding: (name: string) => any }).binding
    const pipe = getBinding('pipe_wrap')
    const stream = getBinding('stream_wrap')
    if (typeof pipe?.Pipe === 'function' && typeof pipe.constants?.SOCKET === 'number' &&
        stream?.streamBaseState instanceof Int32Array && typeof stream.kReadBytesOrError === 'number' &&
        typeof pipe.Pipe.prototype.useUserBuffer === 'function') {
      binding = { Pipe: pipe.Pipe, socketType: pipe.constants.SOCKET, state: stream.streamBaseState, bytesAt: stream.kReadBytesOrError }
    }
  } catch { /* no process.binding, or not this module */ }
  return binding
}

/** Whether this Node can poll /dev/fuse on its event loop (else the reader threads are used). */
export function pollingAvailable (): boolean {
  return pipeBinding() !== null
}

// libuv's error numbers are negative errno values on Linux.
const UV_EINTR = -4
const UV_ENOENT = -2
const UV_EAGAIN = -11
const UV_ENODEV = -19
const UV_ECONNABORTED = -103
const UV_EOF = -4095
const SPARE = -1
const NONE = -2
/**
 * A request buffer between releaseIdleBuffers' calls: used during the last interval, quiet
 * (unused) for one whole interval so far, or given back (and not advised again until used).
 */
const enum Idle { Used, Quiet, GivenBack }
/**
 * After a probe of the kernel's queue (readWaiting) that found nothing, the drains that
 * follow skip it, 1, 2, 4 then at most this many in a row, while no other request holds a
 * slot: one request at a time (depth 1) then pays for a failed probe once in 9 requests
 * instead of each time (measured: p50 14-35 us lower per request in three pairs, more than
 * the EAGAIN's own cost given at readWaiting). A burst after a quiet spell waits at most this
 * many turns before its requests go out together again.
 */
const PROBE_SKIP_MAX = 8
/** After a poll for the next request (pollUs) that found none, the next 1, 2, 4 ... at most this many replies skip it. */
const POLL_SKIP_MAX = 16
const EAGAIN = 11

/**
 * read(2) that returns -errno instead of throwing (native/page-cache.c readNow): Node's
 * readSync throws on EAGAIN, ~4.5 us each, more than a poll's whole turn. Undefined without
 * the addon: then nothing polls after a reply.
 */
const addon = loadAddon<{ readNow?: (fd: number, buf: Buffer, offset: number, length: number) => number, releasePages?: (buf: Buffer) => number }>('page-cache')
const readNow = addon?.readNow
/** madvise(MADV_DONTNEED) of a buffer's whole pages (native/page-cache.c releasePages); undefined without the addon. */
const releasePages = addon?.releasePages

export interface PolledChannelOptions {
  /** Request buffers (slots) at most; as many become resident as were busy at once. */
  slots: number
  /** Bytes per slot: at least protocol.readBufferBytes(max_write). */
  bufferBytes: number
  log: Logger
  /** A pollable descriptor to read instead of a new /dev/fuse (unit tests: a UDP socket). */
  fd?: number
  /**
   * Microseconds to keep reading the descriptor after a reply that left no request in flight,
   * before going back to wait in epoll (0: never; see pollForNext). Needs the page-cache addon.
   */
  pollUs?: number
  /**
   * Every this many milliseconds, the pages of the request buffers that no request used
   * since the last time go back to the system (releaseIdleBuffers; 0: never). Needs the addon.
   */
  releaseIdleMs?: number
}

export class PolledChannel implements RequestChannel {
  readonly fd: number
  readonly ended: Promise<EndReason>
  private settle!: (reason: EndReason) => void
  private readonly binding: PipeBinding
  private readonly log: Logger
  private handle: PipeHandle | undefined
  /** Where a read lands when every slot is busy (reading pauses right after it). */
  private readonly spare: Buffer
  /** The slot the next read goes into, or SPARE, or NONE before the first handle. */
  private armed = NONE
  private readonly slots: Buffer[] = []
  private readonly busy: boolean[] = []
  /** Where each slot stands in releaseIdleBuffers' intervals (Idle); the spare's beside. */
  private readonly idle: Idle[] = []
  private spareIdle = Idle.Quiet
  private releaseTimer: NodeJS.Timeout | undefined
  private inUse = 0
  private handler: RequestHandler | undefined
  /** Requests read but not handed to the handler yet: they go out together after libuv's reads. */
  private readonly waiting: Array<{ slot: number, n: number }> = []
  private draining = false
  private reading = false
  /** Ended (stop(), the connection's end, a read error): the descriptor is closed. */
  private closed = false
  private retries = 0
  /** Probes of the kernel's queue in a drain (readWaiting), skipped after one found nothing. */
  private readonly probe = new SkipBackoff(PROBE_SKIP_MAX)
  /** Polls after a reply (pollForNext), skipped after one found nothing in time. */
  private readonly nextPoll = new SkipBackoff(POLL_SKIP_MAX)
  private readonly pollUs: number
  private pollQueued = false
  /**
   * Requests read by libuv on a wake-up, read after it in the same turn (readWaiting), read
   * into the spare; probes of the queue skipped after one found nothing; requests found by a
   * poll after a reply, polls that found none in time, polls skipped after those; MiB of idle
   * request buffers given back (releaseIdleBuffers).
   */
  readonly stats = { woken: 0, readAfter: 0, spare: 0, probesSkipped: 0, polled: 0, pollMissed: 0, pollsSkipped: 0, releasedMiB: 0 }

  constructor (private readonly opts: PolledChannelOptions) {
    const b = pipeBinding()
    if (!b) throw new Error('this Node cannot poll /dev/fuse (no pipe_wrap binding)')
    this.binding = b
    this.log = opts.log
    // O_CLOEXEC (libuv adds it): see channel.ts.
    this.fd = opts.fd ?? fs.openSync('/dev/fuse', fs.constants.O_RDWR)
    this.spare = Buffer.allocUnsafeSlow(opts.bufferBytes)
    this.pollUs = readNow !== undefined ? Math.max(0, opts.pollUs ?? 0) : 0
    this.ended = new Promise(resolve => { this.settle = resolve })
    const every = opts.releaseIdleMs ?? 0
    if (every > 0 && releasePages !== undefined) {
      this.releaseTimer = setInterval(() => this.releaseIdleBuffers(), every)
      this.releaseTimer.unref()
    }
  }

  /**
   * Gives the pages of every request buffer that no request used since the last call back to
   * the system (madvise MADV_DONTNEED: they read as zeros and fault in again when next used);
   * returns the bytes released (each buffer once per idle spell: `stats.releasedMiB` counts
   * pages that were the daemon's, unless a buffer was never written whole). Why: each buffer takes 1 MiB and more, and once a burst of
   * large writes touched it, it stayed resident: the daemon's peak in the bench came during
   * the compactions after the write jobs, with 32-36 MiB of idle buffers resident among it.
   * Safe because an idle buffer holds nothing anyone reads: the handler is done with a slot
   * before it is given back, and the next request is read over it whole. A slot in use, the
   * one armed for libuv's next read and a spare armed stay as they are. Slots used in every
   * interval (a steady load) keep their pages; only a quiet one pays the faults again.
   */
  releaseIdleBuffers (): number {
    if (releasePages === undefined || this.closed) return 0
    const before = this.stats.releasedMiB
    // A slot in use now (the armed one included) counts as used in the next interval too.
    for (let k = 0; k < this.slots.length; k++) this.idle[k] = this.busy[k] ? Idle.Used : this.aged(this.idle[k], this.slots[k])
    // An armed spare is not given back, but its interval runs.
    this.spareIdle = this.armed === SPARE ? Idle.Quiet : this.aged(this.spareIdle, this.spare)
    return (this.stats.releasedMiB - before) * 1048576
  }

  /** One interval on for a buffer not in use: used becomes quiet, quiet is given back (counted). */
  private aged (state: Idle, buf: Buffer): Idle {
    if (state === Idle.Used) return Idle.Quiet
    if (state === Idle.Quiet) this.stats.releasedMiB += Math.max(0, releasePages!(buf)) / 1048576
    return Idle.GivenBack
  }

  start (onRequest: RequestHandler): void {
    this.handler = onRequest
  }

  /**
   * Reading starts once the mount exists: before it, the kernel fails reads of the descriptor
   * (EPERM) and polls it as an error, which would stop the handle for good.
   */
  mounted (): void {
    if (this.closed || this.handle) return
    this.openHandle()
  }

  private openHandle (): void {
    const h = new this.binding.Pipe(this.binding.socketType)
    const err = h.open(this.fd)
    if (err) return this.finish(`cannot poll /dev/fuse (libuv error ${err})`)
    if (this.armed === NONE) this.armed = this.takeSlot()
    h.useUserBuffer(this.armed === SPARE ? this.spare : this.slots[this.armed])
    h.onread = () => this.onRead()
    this.handle = h
    this.resume()
  }

  /** One read of the handle; returns the buffer the next read goes into. */
  private onRead (): Buffer | undefined {
    const n = this.binding.state[this.binding.bytesAt]
    if (n > 0) {
      this.stats.woken++
      let slot = this.armed
      if (slot === SPARE) {
        this.stats.spare++
        slot = this.takeSlot()
        this.spare.copy(this.slots[slot], 0, 0, n)
      }
      this.waiting.push({ slot, n })
      this.retries = 0
      if (!this.draining) {
        this.draining = true
        setImmediate(() => this.drain())
      }
      if (this.inUse < this.opts.slots) {
        this.armed = this.takeSlot()
        return this.slots[this.armed]
      }
      this.armed = SPARE
      this.spareIdle = Idle.Used
      this.pause()
      return this.spare
    }
    if (n === 0 || n === UV_EAGAIN) return undefined
    this.reading = false
    if ((n === UV_ENOENT || n === UV_EINTR) && !this.closed && this.retries++ < 100) {
      this.log.debug?.({ uv: n }, '/dev/fuse read interrupted; polling it again')
      this.handle = undefined
      this.openHandle()
      return undefined
    }
    this.finish(n === UV_EOF ? 'EOF' : n === UV_ENODEV ? 'ENODEV' : n === UV_ECONNABORTED ? 'ECONNABORTED' : `read error ${n}`)
    return undefined
  }

  /**
   * Hands over the request libuv read in this turn of the loop and every one the kernel has
   * queued behind it (readWaiting), together, so that `queued` tells the server that more wait
   * behind the one it handles: it then does not answer that one with a synchronous call
   * (server.ts alone()).
   */
  private drain (probe = false): void {
    this.draining = false
    // Others hold slots (being answered): more may well be queued, and the probe is worth it.
    const others = this.inUse - this.waiting.length - (this.armed >= 0 ? 1 : 0)
    if (!probe && others === 0 && this.probe.skip()) {
      this.stats.probesSkipped++
    } else {
      const found = this.readWaiting()
      if (found === 0) this.probe.miss()
      else if (found > 0) this.probe.hit()
    }
    while (this.waiting.length > 0) {
      const { slot, n } = this.waiting.shift()!
      let released = false
      this.handler!(this.slots[slot], n, () => {
        if (released) return
        released = true
        this.giveSlot(slot)
      })
    }
  }

  /**
   * Reads the requests the kernel has queued, until it has none (EAGAIN: libuv made the
   * descriptor non-blocking). libuv reads only one request per turn of the loop (a read shorter
   * than its buffer ends its loop), so without this, requests that arrive together would be
   * handed over one per turn, each alone, and answered one after another by synchronous calls
   * instead of going out together (group commit; measured: random 4 KiB writes at depth 16
   * fell from ~16,000 to ~12,800 IOPS). An EAGAIN costs ~4.5 us (the error thrown, its
   * stack trace left out). Another error is left to libuv's next read, which ends the channel.
   * Returns how many it read, or -1 when every slot was busy (nothing probed).
   */
  private readWaiting (): number {
    let found = 0
    // While the spare is armed, the next free slot is kept for what libuv reads into it.
    while (!this.closed && this.inUse < this.opts.slots - (this.armed === SPARE ? 1 : 0)) {
      const slot = this.takeSlot()
      const n = readNow !== undefined ? readNow(this.fd, this.slots[slot], 0, this.opts.bufferBytes) : this.readThrowing(this.slots[slot])
      if (n <= 0) {
        this.untakeSlot(slot)
        return found
      }
      found++
      this.stats.readAfter++
      this.waiting.push({ slot, n })
    }
    return found > 0 ? found : -1
  }

  /** Node's read(2): an EAGAIN is an exception (~4.5 us), its stack trace left out; 0 then. */
  private readThrowing (buf: Buffer): number {
    const limit = Error.stackTraceLimit
    Error.stackTraceLimit = 0
    try {
      return fs.readSync(this.fd, buf, 0, this.opts.bufferBytes, null)
    } catch {
      return 0
    } finally {
      Error.stackTraceLimit = limit
    }
  }

  private takeSlot (): number {
    let k = 0
    while (k < this.busy.length && this.busy[k]) k++
    if (k === this.slots.length) {
      this.slots.push(Buffer.allocUnsafeSlow(this.opts.bufferBytes))
      this.busy.push(false)
    }
    this.busy[k] = true
    this.idle[k] = Idle.Used
    this.inUse++
    return k
  }

  /** Gives back a slot taken for a read that found nothing (reading goes on as it was). */
  private untakeSlot (slot: number): void {
    this.busy[slot] = false
    this.inUse--
  }

  /** Gives back a slot the server is done with; reading resumes if it had paused for one. */
  private giveSlot (slot: number): void {
    this.untakeSlot(slot)
    this.resume()
  }

  /** Reads again; while the spare is armed, only once a slot is free for what lands in it. */
  private resume (): void {
    if (!this.handle || this.closed || this.reading || (this.armed === SPARE && this.inUse >= this.opts.slots)) return
    const err = this.handle.readStart()
    if (err) return this.finish(`cannot poll /dev/fuse (libuv error ${err})`)
    this.reading = true
  }

  private pause (): void {
    if (this.handle && this.reading) this.handle.readStop()
    this.reading = false
  }

  get queued (): number {
    return this.waiting.length
  }

  get slotsTouched (): number {
    return this.slots.length
  }

  /** No thread blocks in read(2) here: the process may exit whenever it likes. */
  get readersAlive (): number {
    return 0
  }

  send (buf: Buffer, len: number): void {
    if (this.closed) return
    sendReply(this.fd, buf, len, this.log)
    if (this.pollUs > 0 && !this.pollQueued) {
      this.pollQueued = true
      setImmediate(() => this.pollForNext())
    }
  }

  /**
   * Reads the descriptor for up to pollUs after a reply that left nothing in flight, instead
   * of going back to epoll at once: a client at queue depth 1 sends its next request a few
   * tens of microseconds after our reply, and waking from epoll costs more than that wait on
   * a virtual machine (a halted vCPU, its wake-up through the hypervisor; measured under fio
   * random 4 KiB writes at depth 1: the scheduler's switch back from epoll_wait was a tenth of
   * the event loop's time). QEMU's event loop does the same (adaptive polling, `poll-max-ns`).
   * Runs in the check phase after the reply's turn: libuv's epoll_wait of that turn does not
   * sleep while an immediate is queued. A poll that finds nothing in time makes the next ones
   * skip (SkipBackoff): a client that pauses between requests costs a poll in 17 replies.
   * Measured (bench, fresh stores, 3 x 5 s each, two alternating pairs): random 4 KiB writes
   * at depth 1 13,000-15,300 -> 19,200-19,700 IOPS, p50 49-55 -> 35-38 us (native-notes/devfuse.md).
   */
  private pollForNext (): void {
    this.pollQueued = false
    const others = this.inUse - (this.armed >= 0 ? 1 : 0)
    if (this.closed || this.draining || this.armed === SPARE || others > 0) return
    if (this.nextPoll.skip()) {
      this.stats.pollsSkipped++
      return
    }
    const slot = this.takeSlot()
    const buf = this.slots[slot]
    const deadline = performance.now() + this.pollUs / 1000
    let n = readNow!(this.fd, buf, 0, this.opts.bufferBytes)
    // Found at once: it was queued already, and others may be behind it (a client at a
    // greater depth); they go out together (the probe). Found by waiting: a lone client.
    const atOnce = n > 0
    while (n === -EAGAIN && performance.now() < deadline) n = readNow!(this.fd, buf, 0, this.opts.bufferBytes)
    if (n > 0) {
      this.nextPoll.hit()
      this.stats.polled++
      this.waiting.push({ slot, n })
      this.drain(atOnce)
      return
    }
    // Nothing in time, or an error: libuv's next read sees the same error and ends the channel.
    this.nextPoll.miss()
    this.stats.pollMissed++
    this.untakeSlot(slot)
  }

  stop (): void {
    this.finish('stopped')
  }

  private finish (reason: EndReason): void {
    clearInterval(this.releaseTimer)
    this.pause()
    if (!this.closed) {
      this.closed = true
      // The handle owns the descriptor now: closing it closes the descriptor (and the
      // connection, if the kernel still had it).
      const h = this.handle as unknown as { close?: () => void } | undefined
      if (h?.close) h.close()
      else try { fs.closeSync(this.fd) } catch { /* closed */ }
    }
    this.settle(reason)
  }
}
