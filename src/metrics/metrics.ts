import { performance } from 'node:perf_hooks'
import client from 'prom-client'
import { errorCode, Errno, FsError } from '../fuse/errno'
import type { Folder, ImageHandle, NodeAttr, Statfs } from '../fuse/image-ops'
import type { Pool } from '../pool/pool'
import type { Store } from '../store'
import { IoTallies } from './io-tally'

/**
 * The mount daemon's metrics (prom-client): I/O by image and operation, flush latency, the
 * log, segments, pool and history from the store's status at each scrape, background passes
 * (compaction, baseline merges, archiving, pool drains, verify) and errors by code. Collected
 * in the daemon, never in the store: the image folder is wrapped (`wrapFolder`) and the
 * store's pass methods are timed from outside (`instrumentPasses`). Served at /metrics when
 * the mount asks for it (src/metrics/server.ts), always as the mount's read-only `stats` file,
 * and summed up per minute for `logdisk status`.
 */
export const STATS_FILE = 'stats'

/** Handle ids of the stats file: far above the image folder's own (which count from 1). */
const STATS_HANDLE_BASE = 2 ** 40

type IoOp = 'read' | 'write' | 'flush' | 'fsync' | 'discard'
const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
const PASS_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600]
const RATE_WINDOW_MS = 60_000
const SAMPLE_EVERY_MS = 5_000

/** Plain running totals (prom-client's counters answer asynchronously): for the rates. */
interface Totals { readOps: number, readBytes: number, writeOps: number, writeBytes: number, flushes: number, errors: number }

export interface Rates {
  /** Seconds the rates are taken over (up to 60; less right after the mount). */
  windowSeconds: number
  readBytesPerSec: number
  readOpsPerSec: number
  writeBytesPerSec: number
  writeOpsPerSec: number
  flushesPerSec: number
  errorsPerSec: number
}

export class DaemonMetrics {
  readonly registry = new client.Registry()
  private readonly totals: Totals = { readOps: 0, readBytes: 0, writeOps: 0, writeBytes: 0, flushes: 0, errors: 0 }
  private readonly samples: Array<{ t: number } & Totals> = []
  private readonly sampler: NodeJS.Timeout
  /** Requests counted and timed by image and operation; given to the registry at each read (io-tally.ts). */
  private readonly io = new IoTallies(LATENCY_BUCKETS)
  private readonly flushSeconds: client.Histogram<string>
  private readonly errors: client.Counter<'code' | 'op'>
  private readonly passRuns: client.Counter<'pass' | 'result'>
  private readonly passBytes: client.Counter<'pass'>
  private readonly passSeconds: client.Histogram<'pass'>
  private statsText = ''

  constructor (private readonly store: Store, private readonly pool: Pool | undefined, labels: { mountpoint: string }) {
    const r = [this.registry]
    this.registry.setDefaultLabels({ store: store.dir, mountpoint: labels.mountpoint })
    client.collectDefaultMetrics({ register: this.registry, prefix: 'logdisk_' }) // logdisk_process_*, logdisk_nodejs_*
    this.io.register(this.registry, {
      ops: { name: 'logdisk_io_operations_total', help: 'I/O requests answered, by image and operation (read, write, flush, fsync, discard)' },
      bytes: { name: 'logdisk_io_bytes_total', help: 'Bytes read, written or discarded, by image and operation' },
      seconds: { name: 'logdisk_io_duration_seconds', help: 'Time to answer an I/O request, by image and operation' }
    })
    this.flushSeconds = new client.Histogram({ name: 'logdisk_flush_duration_seconds', help: 'Time to make every earlier write durable (flush and fsync of current.img)', buckets: LATENCY_BUCKETS, registers: r })
    this.errors = new client.Counter({ name: 'logdisk_errors_total', help: 'Errors answered to the kernel or by a background pass, by code (LogdiskError code or errno name) and operation', labelNames: ['code', 'op'], registers: r })
    this.passRuns = new client.Counter({ name: 'logdisk_pass_runs_total', help: 'Background passes run (compact, baseline, archive, drain, verify), by result', labelNames: ['pass', 'result'], registers: r })
    this.passBytes = new client.Counter({ name: 'logdisk_pass_bytes_total', help: 'Bytes a pass handled: punched by compaction, archived, moved by a drain', labelNames: ['pass'], registers: r })
    this.passSeconds = new client.Histogram({ name: 'logdisk_pass_duration_seconds', help: 'Duration of background passes', labelNames: ['pass'], buckets: PASS_BUCKETS, registers: r })
    for (const pass of ['compact', 'baseline', 'archive', 'drain', 'verify']) {
      for (const result of ['ok', 'error']) this.passRuns.inc({ pass, result }, 0)
      this.passBytes.inc({ pass }, 0)
    }

    // Figures read from the store at each scrape.
    const gauge = (name: string, help: string, labelNames: string[], collect: (g: client.Gauge<string>) => void | Promise<void>): void => {
      // eslint-disable-next-line no-new
      new client.Gauge({ name, help, labelNames, registers: r, collect () { return collect(this) } })
    }
    gauge('logdisk_volume_size_bytes', 'Size of the volume (current.img)', [], g => g.set(store.sizeBytes))
    gauge('logdisk_inline_io_operations', 'Reads and writes of the current and snapshot images since mount whose system call ran on the event loop: read and write with no other request in flight; read_cached beside others, served from the page cache (preadv2 RWF_NOWAIT)', ['op'], g => {
      const io = store.inlineIo
      g.set({ op: 'read' }, io.reads)
      g.set({ op: 'write' }, io.writes)
      g.set({ op: 'read_cached' }, io.cachedReads)
    })
    gauge('logdisk_segments_warmed', 'Segments read whole into the page cache since mount because small reads of the images kept missing in them (posix_fadvise WILLNEED)', [], g => g.set(store.warmedSegments))
    gauge('logdisk_written_bytes', 'Blocks of the current volume that have a version, in bytes', [], g => g.set(store.status().writtenBytes))
    gauge('logdisk_log_bytes', 'Bytes of the log: the current segment plus every other segment not recycled', [], g => g.set(store.status().logBytes))
    gauge('logdisk_segments', 'Segments by state (recycled: ever recycled)', ['state'], g => {
      for (const [state, n] of Object.entries(store.status().segments)) g.set({ state }, n)
    })
    gauge('logdisk_space_bytes', 'Disk space allocated by local segment files by state, and the baseline', ['state'], async g => {
      for (const [state, n] of Object.entries(await store.spaceByState())) g.set({ state }, n)
    })
    gauge('logdisk_index_seq', 'Sequence number of the last entry appended', [], g => g.set(store.status().index.seq))
    gauge('logdisk_index_pending_blocks', 'Block versions appended but not yet checkpointed into LevelDB', [], g => g.set(store.status().index.pendingBlocks))
    gauge('logdisk_history_horizon_seq', 'Points at or before this sequence number may have lost versions to compaction (0: all restorable)', [], g => g.set(store.status().history.horizonSeq))
    gauge('logdisk_history_keep_seconds', 'The history window (history.keep); -1 for forever', [], g => {
      const k = store.status().history.keepMs
      g.set(k === null || !Number.isFinite(k) ? -1 : k / 1000)
    })
    gauge('logdisk_snapshots', 'Snapshots kept', [], g => g.set(store.snapshots().length))
    gauge('logdisk_map_memory_bytes', 'Memory held by the in-memory block map', [], g => g.set(store.status().mapMemoryBytes))
    if (pool) {
      gauge('logdisk_pool_capacity_bytes', 'Capacity of each pool volume', ['volume', 'dir', 'state'], g => {
        g.reset()
        for (const v of pool.status().volumes) g.set({ volume: v.id, dir: v.dir, state: v.state }, v.capacityBytes)
      })
      gauge('logdisk_pool_used_bytes', 'This store\'s segments on each pool volume, in bytes', ['volume', 'dir', 'state'], g => {
        g.reset()
        for (const v of pool.status().volumes) g.set({ volume: v.id, dir: v.dir, state: v.state }, v.usedBytes)
      })
      gauge('logdisk_pool_use_ratio', 'Used over capacity of the assigned pool volumes', [], g => g.set(pool.status().useFraction))
    }

    this.sample()
    this.sampler = setInterval(() => this.sample(), SAMPLE_EVERY_MS)
    this.sampler.unref()
  }

  close (): void {
    clearInterval(this.sampler)
  }

  private sample (): void {
    const now = Date.now()
    this.samples.push({ t: now, ...this.totals })
    while (this.samples.length > 2 && now - this.samples[1].t >= RATE_WINDOW_MS) this.samples.shift()
  }

  /** Rates over the last minute (or since the mount, if younger). */
  rates (): Rates {
    const now = Date.now()
    const from = this.samples.find(s => now - s.t <= RATE_WINDOW_MS + SAMPLE_EVERY_MS) ?? this.samples[0]
    const dt = Math.max(0.001, (now - from.t) / 1000)
    const per = (k: keyof Totals): number => Math.round(((this.totals[k] - from[k]) / dt) * 100) / 100
    return {
      windowSeconds: Math.round(dt),
      readBytesPerSec: per('readBytes'),
      readOpsPerSec: per('readOps'),
      writeBytesPerSec: per('writeBytes'),
      writeOpsPerSec: per('writeOps'),
      flushesPerSec: per('flushes'),
      errorsPerSec: per('errors')
    }
  }

  /** Prometheus text exposition of everything. */
  async render (): Promise<{ contentType: string, body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() }
  }

  /**
   * The `stats` file: the same figures as /metrics as `name{labels} value` lines (no HELP,
   * TYPE or histogram buckets; a histogram shows its _sum and _count), after the rates.
   */
  async renderStats (): Promise<string> {
    const rates = this.rates()
    const lines = [
      `# logdisk ${this.store.dir} at ${new Date().toISOString()}; the same figures as /metrics (docs/CLI.md "Metrics")`,
      ...Object.entries(rates).map(([k, v]) => `rate_${k.replace(/[A-Z]/g, c => `_${c.toLowerCase()}`)} ${v}`)
    ]
    for (const line of (await this.registry.metrics()).split('\n')) {
      if (line === '' || line.startsWith('#') || line.includes('_bucket{') || line.startsWith('logdisk_process_') || line.startsWith('logdisk_nodejs_')) continue
      lines.push(line.replace(/,?(store|mountpoint)="(?:[^"\\]|\\.)*"/g, '').replace(/\{,/, '{').replace(/,\}/, '}').replace(/\{\}/, ''))
    }
    this.statsText = lines.join('\n') + '\n'
    return this.statsText
  }

  private countError (err: unknown, op: string): void {
    this.errors.inc({ code: errorCode(err), op })
    this.totals.errors++
  }

  private timeIo<T> (image: string, op: IoOp, bytes: (v: T) => number, fn: () => Promise<T>): Promise<T> {
    const start = performance.now()
    let pending: Promise<T>
    try {
      pending = fn()
    } catch (err) {
      this.countError(err, op)
      return Promise.reject(err)
    }
    return pending.then(v => {
      const seconds = (performance.now() - start) / 1000
      const t = this.io.get(image, op)
      t.observe(seconds)
      const n = bytes(v)
      t.ops++
      if (n > 0) t.bytes += n
      if (op === 'read') { this.totals.readOps++; this.totals.readBytes += n } else if (op === 'write') { this.totals.writeOps++; this.totals.writeBytes += n } else {
        if (op === 'flush' || op === 'fsync') { this.flushSeconds.observe(seconds); this.totals.flushes++ }
      }
      return v
    }, err => {
      this.countError(err, op)
      throw err
    })
  }

  /**
   * Times the store's (and pool's) background passes from outside: whoever starts them, the
   * policy engine or a command through the control socket.
   */
  instrumentPasses (): void {
    const wrap = <O extends object>(obj: O, method: string, pass: string, bytesOf: (r: any) => number): void => {
      const original = (obj as any)[method] as ((...args: unknown[]) => Promise<unknown>) | undefined
      if (typeof original !== 'function') return
      ;(obj as any)[method] = async (...args: unknown[]) => {
        const end = this.passSeconds.startTimer({ pass })
        try {
          const r = await original.apply(obj, args)
          end()
          this.passRuns.inc({ pass, result: 'ok' })
          const bytes = bytesOf(r)
          if (bytes > 0) this.passBytes.inc({ pass }, bytes)
          return r
        } catch (err) {
          end()
          this.passRuns.inc({ pass, result: 'error' })
          this.countError(err, pass)
          throw err
        }
      }
    }
    wrap(this.store, 'compact', 'compact', r => r?.bytesPunched ?? 0)
    wrap(this.store, 'compactIntoBaseline', 'baseline', r => (r?.blocks ?? 0) * this.store.blockBytes)
    wrap(this.store, 'archive', 'archive', r => r?.bytes ?? 0)
    wrap(this.store, 'verify', 'verify', () => 0)
    if (this.pool) wrap(this.pool, 'drain', 'drain', r => (typeof r === 'number' ? r : 0) * this.store.status().segmentBytes)
  }

  /** The image folder with every I/O counted and timed, and the `stats` file beside the images. */
  wrapFolder (inner: Folder): Folder {
    const m = this // eslint-disable-line @typescript-eslint/no-this-alias
    const statsHandles = new Map<number, { handle: ImageHandle, text?: Promise<Buffer> }>()
    let nextStats = STATS_HANDLE_BASE
    const isStats = (h: ImageHandle): boolean => h.image === STATS_FILE
    // Size 0, as /proc files: reads are direct (FOPEN_DIRECT_IO, fuse-native's direct_io), so readers read to EOF.
    const statsAttr = (): NodeAttr => ({ key: 'stats', dir: false, mode: 0o100444, size: 0, blockBytes: 4096, nlink: 1, timeMs: Date.now() })
    const folder: Folder = {
      get uid () { return inner.uid },
      get gid () { return inner.gid },
      list: () => [...inner.list(), STATS_FILE],
      attr: (name?: string) => name === STATS_FILE ? statsAttr() : inner.attr(name),
      access (name, mask) {
        if (name !== STATS_FILE) return inner.access(name, mask)
        if ((mask & 2) !== 0) throw new FsError(Errno.EROFS)
      },
      open (name, flags) {
        if (name !== STATS_FILE) return inner.open(name, flags)
        if ((flags & 3) !== 0) throw new FsError(Errno.EROFS)
        const handle = { id: nextStats++, image: STATS_FILE, writable: false }
        statsHandles.set(handle.id, { handle })
        return handle
      },
      release (handle) {
        if (isStats(handle)) statsHandles.delete(handle.id)
        else inner.release(handle)
      },
      handle (id) {
        const s = statsHandles.get(id)
        return s ? s.handle : inner.handle(id)
      },
      async read (handle, pos, into, opts) {
        if (isStats(handle)) {
          const s = statsHandles.get(handle.id)
          if (!s) throw new FsError(Errno.EBADF)
          s.text ??= m.renderStats().then(t => Buffer.from(t))
          const text = await s.text
          return text.copy(into, 0, Math.min(pos, text.length), Math.min(text.length, pos + into.length))
        }
        return m.timeIo(handle.image, 'read', n => n, () => inner.read(handle, pos, into, opts))
      },
      get crcBlockBytes () { return inner.crcBlockBytes },
      write (handle, pos, data, blockCrcs, opts) {
        if (isStats(handle)) return Promise.reject(new FsError(Errno.EROFS))
        return m.timeIo(handle.image, 'write', n => n, () => inner.write(handle, pos, data, blockCrcs, opts))
      },
      flush (handle) {
        if (isStats(handle)) return Promise.resolve()
        return m.timeIo(handle.image, 'flush', () => 0, () => inner.flush(handle))
      },
      fsync (handle) {
        if (isStats(handle)) return Promise.resolve()
        return m.timeIo(handle.image, 'fsync', () => 0, () => inner.fsync(handle))
      },
      fallocate (handle, mode, offset, length) {
        if (isStats(handle)) return Promise.reject(new FsError(Errno.EROFS))
        return m.timeIo(handle.image, 'discard', () => length, () => inner.fallocate(handle, mode, offset, length))
      },
      truncate (name, size) {
        if (name === STATS_FILE) throw new FsError(Errno.EROFS)
        inner.truncate(name, size)
      },
      utimens (name) {
        if (name === STATS_FILE) throw new FsError(Errno.EROFS)
        inner.utimens(name)
      },
      chmod: name => inner.chmod(name),
      chown: name => inner.chown(name),
      statfs: (): Statfs => inner.statfs(),
      openHandles: image => inner.openHandles(image),
      destroy: () => inner.destroy()
    }
    return folder
  }
}
