import fs from 'node:fs'
import { passMemoryReclaimer, startHeapTrim } from './heap-trim'
import { startMemorySampler } from './memory-sampler'
import path from 'node:path'
import { LogdiskError, isLogdiskError } from '../errors'
import { CURRENT_IMAGE } from '../fuse/image-ops'
import { mountImages, type Mounted } from '../fuse/mount'
import { openStore, policyEngineFor } from '../app/open'
import type { PolicyEvent } from '../policy/engine'
import { readPolicy } from '../policy/policy'
import type { Logger } from '../store/logger'
import { writeFileAtomic } from '../store/config'
import { ops } from '../ops/ops'
import { ControlServer, type Handler, type RequestContext } from './control'
import { DAEMON_FILE, controlSocketPath, type DaemonInfo } from './paths'
import { holdersOf } from './holders'
import { ReplicationManager } from '../replicate/manager'
import { Hydrator } from '../replicate/hydrate'
import { readReplicaSource } from '../replicate/source-link'
import { notifyReady, notifyStatus } from './notify'
import { DaemonMetrics } from '../metrics/metrics'
import { serveMetrics } from '../metrics/server'

/** How long the first SIGTERM/SIGINT waits for open images to be closed before stopping anyway. */
const STOP_WAIT_MS = Number(process.env.LOGDISK_STOP_WAIT_MS || 10_000)
/** Once stopping, the daemon exits after this long whatever hangs (a stuck kernel unmount). */
const STOP_DEADLINE_MS = Number(process.env.LOGDISK_STOP_DEADLINE_MS || 30_000)
/** A stop step (flush, unmount, closing the store) taking longer than this is logged as a warning while it runs (tests shorten it). */
const SLOW_STOP_STEP_MS = Number(process.env.LOGDISK_SLOW_STOP_STEP_MS || 10_000)
/** `logdisk unmount` waits this long for a just-detached loop device's RELEASE to arrive. */
const UNMOUNT_IDLE_WAIT_MS = 2_000

/** How often the daemon looks at its policy (tests shorten it). */
const POOL_TICK_MS = Number(process.env.LOGDISK_MAINTENANCE_TICK_MS || process.env.LOGDISK_POOL_TICK_MS || 2000)

/**
 * The mount daemon: holds the store open, serves the image folder over FUSE and answers the
 * control socket. Resolves when the mount is gone (unmount command, SIGINT or SIGTERM).
 * Nothing here may block the event loop while mounted: the kernel waits on this same thread
 * for every image I/O, so a synchronous child process would deadlock the mount.
 */
export interface DaemonOptions {
  /** devfuse, fuse-native or auto. */
  transport?: string
  /** FUSE allow_other: users other than the daemon's may open the images. */
  allowOther?: boolean
  /** Serve current.img read-only too (mount -o ro). */
  readOnly?: boolean
  /** HOST:PORT of the Prometheus endpoint; none by default. */
  metrics?: string
  /** Take the replica over from the host that holds its lease (mount --takeover). */
  takeover?: boolean
}

export async function runDaemon (storeDir: string, mountpoint: string, log: Logger, onReady: (info: DaemonInfo) => void, opts: DaemonOptions = {}): Promise<void> {
  startMemorySampler() // LOGDISK_MEMORY_SAMPLE=<file>: a diagnostic, off by default
  startHeapTrim() // freed heap memory back to the system every 2 s (LOGDISK_HEAP_TRIM_MS)
  const faults = new Set((process.env.LOGDISK_FAULTS ?? '').split(',').filter(Boolean))
  if (faults.size > 0) log.warn({ faults: [...faults] }, 'fault injection is on (LOGDISK_FAULTS)')
  const { store, pool } = await openStore(storeDir, { logger: log, holder: `logdisk mount ${mountpoint}`, faults, reclaimMemory: passMemoryReclaimer() })
  if (store.recovery.cut) log.warn(store.recovery.cut, 'recovered: a torn log tail was cut')
  // Metrics are always counted (the stats file, status rates); served over HTTP only if asked.
  const metrics = new DaemonMetrics(store, pool, { mountpoint })
  metrics.instrumentPasses()
  let metricsServer: { address: string, close: () => Promise<void> } | undefined
  let mounted: Mounted | undefined
  let control: ControlServer | undefined
  let finish!: () => void
  const done = new Promise<void>(resolve => { finish = resolve })
  let stopping: Promise<void> | undefined
  let poolTimer: NodeJS.Timeout | undefined

  /** The images open right now, with their holders when /sys and /proc tell: one line. */
  const openText = (clientPid?: number): string => {
    if (!mounted) return 'nothing is open'
    const images = [CURRENT_IMAGE, ...store.snapshots().map(s => `${s.name}.img`)].filter(i => mounted!.openHandles(i) > 0)
    const holders = holdersOf(mountpoint, [process.pid, clientPid])
    const parts = images.map(image => {
      const by = holders.filter(h => h.image === image).map(h => h.what)
      return `${image} is open${by.length > 0 ? ` (held by ${by.join(', ')})` : ''}`
    })
    const release = holders.filter(h => h.release).map(h => h.release)
    // A process that holds an image is closed by its own means; "losetup -a" names only loops.
    const hint = holders.length > 0 ? '; stop or close what holds it' : '; detach what holds it (losetup -a lists loop devices; fuser -m names processes)'
    return (parts.length > 0 ? parts.join('; ') : `${mounted.openHandles()} image handle(s) are open`) +
      (release.length > 0 ? `; release with: ${release.join('; ')}` : hint)
  }
  const busyError = (clientPid?: number): LogdiskError => new LogdiskError('BUSY', `${mountpoint} is busy: ${openText(clientPid)}; then run logdisk unmount again`)
  /** Waits up to `ms` for every image to be closed (the kernel's RELEASE of a just-closed file may still be in flight). */
  const waitIdle = async (ms: number, until: () => boolean = () => false): Promise<boolean> => {
    const deadline = Date.now() + ms
    while (mounted && mounted.openHandles() > 0 && Date.now() < deadline && !until()) await new Promise(resolve => setTimeout(resolve, 50))
    return !mounted || mounted.openHandles() === 0
  }

  /**
   * Stops serving: the unmount policy event, flush, unmount, close the store. Without `force`
   * it is refused (BUSY, nothing changed) while an image is open; with `force` (a signal whose
   * wait ran out, or a second signal) the mount is detached anyway and I/O on open images fails
   * from then on; `alreadyGone` (the kernel ended the mount) only closes the store. One stop at
   * a time; a refused stop leaves no trace, so a later one can run.
   */
  const stop = (force: boolean, alreadyGone = false): Promise<void> => {
    if (stopping) return stopping
    if (!force && mounted && mounted.openHandles() > 0) return Promise.reject(busyError())
    const attempt: Promise<void> = (async () => {
      // Each step is timed: a stop that outlasts `logdisk unmount`'s wait then names the step it
      // is stuck in (the command quotes the daemon's first warning), and every stop logs where
      // its time went.
      const took: Record<string, number> = {}
      const step = async <T>(name: string, work: () => Promise<T>): Promise<T> => {
        const started = Date.now()
        const slow = setTimeout(() => log.warn({ step: name }, `stopping: still ${name} after ${SLOW_STOP_STEP_MS / 1000} s`), SLOW_STOP_STEP_MS)
        try {
          return await work()
        } finally {
          clearTimeout(slow)
          took[name] = Date.now() - started
        }
      }
      void notifyStatus(`stopping: unmounting ${mountpoint}`, log, true)
      await step('running the on.unmount policy', () => engine.onEvent('unmount')).catch(err => log.error({ err: (err as Error).message }, 'on.unmount policy failed'))
      await step('flushing the store', () => store.flush()).catch(err => log.error({ err: (err as Error).message }, 'flush before unmount failed'))
      // The replica gets the last durable point, then the lease is released (bounded: an
      // unreachable target does not hold the unmount up).
      await step('stopping replication', () => replication.stop()).catch(err => log.error({ err: (err as Error).message }, 'stopping replication failed'))
      await step('stopping fetch-back', async () => { await hydrator?.stop() })
      try {
        if (!alreadyGone) await step('detaching the mount', async () => { await mounted?.unmount(force) })
      } catch (err) {
        if (!force && isLogdiskError(err, 'BUSY')) throw busyError() // opened meanwhile: keep serving
        log.error({ err: (err as Error).message }, 'unmount failed; stopping anyway (logdisk unmount removes the stale mount)')
      }
      clearInterval(poolTimer)
      metrics.close()
      await metricsServer?.close().catch(() => undefined)
      await control?.close().catch(() => undefined)
      try {
        await step('closing the store', () => store.close())
      } catch (err) {
        // Past the point of return: the mount is detached and the control socket closed. What
        // was written is in the log (flushed above); the index may lack its end, which the next
        // open replays, as after a crash. daemon.json stays, naming this process: `logdisk
        // unmount` reads it, once the process is gone, as a stop that did not close the store
        // cleanly (it had reported success while the store was never closed: helper-97's D2).
        log.error({ mountpoint, err: (err as Error).message, ms: took }, 'closing the store failed: the mount is gone but the store was not closed cleanly; its next open replays the log as after a crash')
        process.exitCode = 1
        finish()
        return
      }
      fs.rmSync(path.join(storeDir, DAEMON_FILE), { force: true })
      log.info({ mountpoint, ms: took }, 'unmounted')
      finish()
    })()
    stopping = attempt
    attempt.catch(() => { if (stopping === attempt) stopping = undefined })
    return attempt
  }

  const replication = new ReplicationManager(store, log, { takeover: opts.takeover })
  // A store recovered lazily from a replica brings the segments it left there back, in the background.
  let hydrator: Hydrator | undefined
  const engine = policyEngineFor(store, pool, log, name => (mounted?.openHandles(`${name}.img`) ?? 0) > 0, replication)
  store.setNoSpaceHandler(() => engine.relieveNoSpace())
  const after = (event: PolicyEvent) => () => {
    engine.onEvent(event).catch(err => log.error({ err: (err as Error).message, event }, 'event policy failed'))
  }
  /** Who holds `image` open (the client and the daemon aside), and how to release it: for a refusal while it is open. */
  const heldBy = (image: string, clientPid: number | undefined): { who: string, release: string } => {
    const by = holdersOf(mountpoint, [process.pid, clientPid]).filter(h => h.image === image)
    const release = by.filter(h => h.release).map(h => h.release)
    return {
      who: by.length > 0 ? ` (held by ${by.map(h => h.what).join(', ')})` : ' (loop-mounted?)',
      release: release.length > 0 ? `release it with: ${release.join('; ')}` : 'close it (unmount and detach a loop device over it)'
    }
  }
  const handlers: Record<string, Handler> = {
    // An interruptible op stops when its client goes away (a command killed, not only one Ctrl-C'd).
    ...Object.fromEntries(Object.entries(ops).map(([name, op]) => [name, (args: Record<string, unknown>, req: RequestContext) => op(store, args, { mountpoint, cancelled: req.gone })])),
    status: async args => ({ ...(await ops.status(store, args, {}) as object), ...(hydrator ? { fromReplica: hydrator.status() } : {}), mountpoint, pid: process.pid, transport: mounted?.transport, daemonMemory: process.memoryUsage(), rates: metrics.rates(), metrics: metricsServer?.address ?? null }),
    sync: async args => {
      const point = await ops.sync(store, args, {})
      setImmediate(after('sync'))
      return point
    },
    resize: async (args, req) => {
      // A loop device (or a program) over an image keeps the size it read: a shrink under it
      // left a device larger than its image, whose writes past the new end failed with EIO
      // (a hostile test, helper-56). Growing is fine: losetup -c takes the new size.
      // Checked under the store's append lock, just before the size changes (nothing awaits
      // in between): checked before the shrink waited for the lock, an image opened (a loop
      // device attached) meanwhile kept the old size (helper-86 D2).
      // (Also before it waits, to refuse at once.)
      const resizeReady = (fromBytes: number, toBytes: number): void => {
        if (toBytes < fromBytes && mounted && mounted.openHandles() > 0) {
          const held = holdersOf(mountpoint, [process.pid, req.clientPid]).map(h => `${h.image} (held by ${h.what})`)
          throw new LogdiskError('BUSY', `cannot shrink ${store.dir} while its images are open${held.length > 0 ? `: ${held.join(', ')}` : ''}; a loop device or program over one keeps the old size: detach or close it first; nothing was changed`)
        }
      }
      if (args.grow !== true && Number.isFinite(Number(args.sizeBytes))) resizeReady(store.sizeBytes, Number(args.sizeBytes))
      const r = await ops.resize(store, args, { mountpoint, cancelled: req.gone, resizeReady })
      await mounted?.attributesChanged() // stat and losetup -c see the new size now, not in 1 s (or never)
      return r
    },
    snapshot: async args => {
      const snap = await ops.snapshot(store, args, {})
      setImmediate(after('snapshot'))
      return snap
    },
    // policy set wrote policy.json and waits for this: the change is in force when it returns.
    policy: async () => {
      await engine.reload()
      return { pid: process.pid }
    },
    delete: async (args, req) => {
      const image = `${String(args.name)}.img`
      if (mounted && mounted.openHandles(image) > 0) {
        const { who, release } = heldBy(image, req.clientPid)
        throw new LogdiskError('BUSY', `${image} is open${who}; ${release} first`)
      }
      return ops.delete(store, args, {})
    },
    receive: async (args, req) => {
      // A receive writes the current volume (with --force it rolls it back first) under whatever
      // has it open: a filesystem mounted over it was corrupted (a hostile test, helper-62).
      if (mounted && mounted.openHandles(CURRENT_IMAGE) > 0) {
        const { who, release } = heldBy(CURRENT_IMAGE, req.clientPid)
        throw new LogdiskError('BUSY', `${CURRENT_IMAGE} is open${who}, and a receive writes the current volume under it (a filesystem mounted over it would be corrupted); ${release} first; nothing was changed`)
      }
      // And no open reaches it while the stream is applied (EBUSY): one made after the check
      // above wrote under the receive (helper-64).
      const release = mounted?.holdImage(CURRENT_IMAGE)
      try {
        return await ops.receive(store, args, { mountpoint })
      } finally {
        release?.()
      }
    },
    unmount: async (_args, req) => {
      // A loop device detached a moment ago may still have its RELEASE in flight.
      if (!(await waitIdle(UNMOUNT_IDLE_WAIT_MS))) throw busyError(req.clientPid)
      await store.flush().catch(err => {
        // A write-back of the log failed (a disk error, a filesystem gone read-only): no flush
        // can succeed in this process again, and the error says to unmount and mount again.
        // Refusing the unmount left only kill (a hostile test's D3); the close releases the
        // store as a kill would, and the next open writes what no flush covered again.
        if (!store.writebackFailed) throw err
        log.error({ mountpoint, err: (err as Error).message }, 'unmounting without a final flush: a write-back of the log failed')
      })
      // The index written before anything stops: a store whose index cannot be written (its
      // filesystem full) cannot be closed cleanly, and the unmount is refused while the mount
      // still serves, rather than reported done with the close failing after it (helper-97's
      // D2). What a close writes after this (the stop's own passes) may still fail: the
      // unmount command then says so (daemon.json is left).
      // (Not after a failed write-back: that close releases the store as a kill would, above.)
      if (!store.writebackFailed) {
        await store.checkpoint().catch(err => {
          throw new LogdiskError(isLogdiskError(err, 'NO_SPACE') ? 'NO_SPACE' : 'IO', `cannot unmount ${mountpoint}: the store's index could not be written, so the store cannot be closed cleanly (${(err as Error).message}); nothing was stopped, the mount still serves; make room (or fix the error) and run logdisk unmount again`)
        })
      }
      await new Promise(resolve => setTimeout(resolve, 20)) // an end-of-stream read with the request is processed by now
      if (req.gone()) {
        // The client gave up waiting (a stopped or overloaded daemon) and told its user that
        // nothing was unmounted: keep it that way.
        log.warn({ mountpoint }, 'an unmount request was abandoned by its client before it could be answered; not unmounting')
        return { mountpoint }
      }
      // Answer first, then unmount: the reply must not wait on the kernel releasing the mount.
      setImmediate(() => { stop(false).catch(err => log.error({ err: (err as Error).message }, 'unmount refused')) })
      return { mountpoint }
    }
  }

  try {
    // Before the mount: a replica another host holds (LEASE_HELD) fails the mount, in one line.
    await replication.apply(readPolicy(storeDir), true)
    if (opts.metrics !== undefined) metricsServer = await serveMetrics(opts.metrics, () => metrics.render())
    control = await ControlServer.listen(controlSocketPath(storeDir), handlers)
    mounted = await mountImages(store, mountpoint, log, { transport: opts.transport, faults, allowOther: opts.allowOther, readOnly: opts.readOnly, wrap: folder => metrics.wrapFolder(folder) })
  } catch (err) {
    metrics.close()
    await metricsServer?.close().catch(() => undefined)
    await control?.close()
    await replication.stop().catch(() => undefined)
    await store.close()
    throw err
  }

  if (readReplicaSource(storeDir) && !opts.readOnly) hydrator = new Hydrator(store, log).start()

  // Policies, applied by the engine: on a timer, and after the events they name.
  poolTimer = setInterval(() => {
    engine.tick().catch(err => log.error({ err: (err as Error).message }, 'policy maintenance failed; will retry'))
  }, POOL_TICK_MS)
  poolTimer.unref()

  // A signal always ends in a stop (systemctl stop, Ctrl-C): the first waits up to
  // LOGDISK_STOP_WAIT_MS for open images to be closed, saying which ones are open, then stops
  // anyway; a second one stops at once. Either way the stop itself gets a deadline.
  let signals = 0
  let hurry = false
  const armDeadline = (): void => {
    setTimeout(() => {
      log.error({ mountpoint }, `the stop did not finish within ${STOP_DEADLINE_MS / 1000} s; exiting now (logdisk unmount removes a stale mount)`)
      process.exit(1)
    }, STOP_DEADLINE_MS)
  }
  const stopOnSignal = async (signal: string): Promise<void> => {
    if (mounted && mounted.openHandles() > 0) {
      log.warn({ signal }, `stopping on ${signal}: waiting up to ${STOP_WAIT_MS / 1000} s for open images to be closed: ${openText()} (a second signal stops at once)`)
      await waitIdle(STOP_WAIT_MS, () => hurry)
    }
    const force = !!mounted && mounted.openHandles() > 0
    if (force) log.warn({ signal }, `stopping with images still open; their I/O fails once the mount is detached and its connection ended (within ${Math.ceil(STOP_DEADLINE_MS / 1000)} s): ${openText()}`)
    armDeadline()
    try {
      await stop(force)
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'an image was opened during the stop; stopping anyway')
      await stop(true)
    }
  }
  const onSignal = (signal: string): void => {
    signals++
    if (signals === 1) {
      log.info({ signal }, 'stopping on signal')
      stopOnSignal(signal).catch(err => {
        log.error({ err: (err as Error).message }, 'stop on signal failed; exiting')
        process.exit(1)
      })
    } else {
      log.warn({ signal }, 'second signal: stopping now, whatever is still open')
      hurry = true
    }
  }
  if (faults.has('crash-on-sigusr2')) {
    // Tests: a crash of the daemon while mounted (an uncaught exception on the event loop).
    process.on('SIGUSR2', () => setImmediate(() => { throw new Error('injected crash (LOGDISK_FAULTS=crash-on-sigusr2)') }))
  }
  // SIGHUP too: a foreground daemon whose terminal goes away unmounts cleanly instead of dying.
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  process.on('SIGHUP', onSignal)

  // The kernel ended the mount itself (umount from outside, DESTROY): only close the store.
  mounted.ended.then(() => {
    log.warn({ mountpoint }, 'the mount is gone; closing the store')
    stop(true, true).catch(err => log.error({ err: (err as Error).message }, 'closing after the mount ended failed'))
  }, () => undefined)

  const info: DaemonInfo = { pid: process.pid, store: storeDir, mountpoint, socket: control.socketPath, startedAt: new Date().toISOString(), transport: mounted.transport, readOnly: !!opts.readOnly, ...(metricsServer ? { metrics: metricsServer.address } : {}) }
  writeFileAtomic(path.join(storeDir, DAEMON_FILE), JSON.stringify(info, null, 2) + '\n')
  log.info({ store: info.store, mountpoint, socket: info.socket, sizeBytes: store.sizeBytes, transport: mounted.transport, readOnly: !!opts.readOnly, allowOther: !!opts.allowOther, metrics: metricsServer?.address }, 'mounted')
  // systemd (Type=notify): ready once current.img answers a read through the mount.
  await notifyReady(mountpoint, CURRENT_IMAGE, log, `serving ${storeDir} at ${mountpoint}`)
    .catch(err => log.warn({ err: (err as Error).message }, 'not telling systemd we are ready: current.img does not read'))
  onReady(info)
  await done
  process.off('SIGINT', onSignal)
  process.off('SIGTERM', onSignal)
  process.off('SIGHUP', onSignal)
}
