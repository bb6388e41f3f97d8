import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError } from '../errors'
import { mountImages, type Mounted } from '../fuse/mount'
import { openStore } from '../pool/open-store'
import { PolicyEngine, type PolicyEvent } from '../policy/engine'
import { readPolicy } from '../policy/policy'
import type { Logger } from '../store/logger'
import { writeFileAtomic } from '../store/config'
import { ops } from '../ops/ops'
import { ControlServer, type Handler } from './control'
import { DAEMON_FILE, controlSocketPath, type DaemonInfo } from './paths'

/** How often the daemon looks at its policy (tests shorten it). */
const POOL_TICK_MS = Number(process.env.LOGDISK_MAINTENANCE_TICK_MS || process.env.LOGDISK_POOL_TICK_MS || 2000)

/**
 * The mount daemon: holds the store open, serves the image folder over FUSE and answers the
 * control socket. Resolves when the mount is gone (unmount command, SIGINT or SIGTERM).
 * Nothing here may block the event loop while mounted: the kernel waits on this same thread
 * for every image I/O, so a synchronous child process would deadlock the mount.
 */
export async function runDaemon (storeDir: string, mountpoint: string, log: Logger, onReady: (info: DaemonInfo) => void, opts: { transport?: string } = {}): Promise<void> {
  const faults = new Set((process.env.LOGDISK_FAULTS ?? '').split(',').filter(Boolean))
  if (faults.size > 0) log.warn({ faults: [...faults] }, 'fault injection is on (LOGDISK_FAULTS)')
  const { store, pool } = await openStore(storeDir, { logger: log, holder: `logdisk mount ${mountpoint}`, faults })
  if (store.recovery.cut) log.warn(store.recovery.cut, 'recovered: a torn log tail was cut')
  let mounted: Mounted | undefined
  let control: ControlServer | undefined
  let finish!: () => void
  const done = new Promise<void>(resolve => { finish = resolve })
  let stopping: Promise<void> | undefined
  let poolTimer: NodeJS.Timeout | undefined

  /** `alreadyGone`: the kernel ended the mount itself (umount from outside): only close the store. */
  const stop = (alreadyGone = false): Promise<void> => {
    if (stopping) return stopping
    stopping = (async () => {
      try {
        if (!alreadyGone) mounted?.assertIdle()
        await engine.onEvent('unmount').catch(err => log.error({ err: (err as Error).message }, 'on.unmount policy failed'))
        if (!alreadyGone) await mounted?.unmount()
      } catch (err) {
        stopping = undefined
        throw err
      }
      clearInterval(poolTimer)
      await control?.close()
      await store.close()
      fs.rmSync(path.join(storeDir, DAEMON_FILE), { force: true })
      log.info({ mountpoint }, 'unmounted')
      finish()
    })()
    return stopping
  }

  const engine = new PolicyEngine(store, pool, log, Date.now, () => readPolicy(storeDir), name => (mounted?.openHandles(`${name}.img`) ?? 0) > 0)
  const after = (event: PolicyEvent) => () => {
    engine.onEvent(event).catch(err => log.error({ err: (err as Error).message, event }, 'event policy failed'))
  }
  const handlers: Record<string, Handler> = {
    ...Object.fromEntries(Object.entries(ops).map(([name, op]) => [name, (args: Record<string, unknown>) => op(store, args, {})])),
    status: async args => ({ ...(await ops.status(store, args, {}) as object), mountpoint, pid: process.pid, transport: mounted?.transport, daemonMemory: process.memoryUsage() }),
    sync: async args => {
      const point = await ops.sync(store, args, {})
      setImmediate(after('sync'))
      return point
    },
    snapshot: async args => {
      const snap = await ops.snapshot(store, args, {})
      setImmediate(after('snapshot'))
      return snap
    },
    delete: async args => {
      const image = `${String(args.name)}.img`
      if (mounted && mounted.openHandles(image) > 0) {
        throw new LogdiskError('BUSY', `${image} is open (loop-mounted?); unmount it and detach its loop device first`)
      }
      return ops.delete(store, args, {})
    },
    unmount: async () => {
      mounted?.assertIdle()
      await store.flush()
      // Answer first, then unmount: the reply must not wait on the kernel releasing the mount.
      setImmediate(() => { stop().catch(err => log.error({ err: (err as Error).message }, 'unmount failed')) })
      return { mountpoint }
    }
  }

  try {
    control = await ControlServer.listen(controlSocketPath(storeDir), handlers)
    mounted = await mountImages(store, mountpoint, log, { transport: opts.transport, faults })
  } catch (err) {
    await control?.close()
    await store.close()
    throw err
  }

  // Policies, applied by the engine: on a timer, and after the events they name.
  poolTimer = setInterval(() => {
    engine.tick().catch(err => log.error({ err: (err as Error).message }, 'policy maintenance failed; will retry'))
  }, POOL_TICK_MS)
  poolTimer.unref()

  const onSignal = (signal: string): void => {
    log.info({ signal }, 'unmounting on signal')
    stop().catch(err => log.error({ err: (err as Error).message }, 'not unmounting: ' + (err instanceof LogdiskError ? err.message : String(err))))
  }
  if (faults.has('crash-on-sigusr2')) {
    // Tests: a crash of the daemon while mounted (an uncaught exception on the event loop).
    process.on('SIGUSR2', () => setImmediate(() => { throw new Error('injected crash (LOGDISK_FAULTS=crash-on-sigusr2)') }))
  }
  // SIGHUP too: a foreground daemon whose terminal goes away unmounts cleanly instead of dying.
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  process.on('SIGHUP', onSignal)

  mounted.ended.then(() => {
    log.warn({ mountpoint }, 'the mount is gone; closing the store')
    stop(true).catch(err => log.error({ err: (err as Error).message }, 'closing after the mount ended failed'))
  }, () => undefined)

  const info: DaemonInfo = { pid: process.pid, store: storeDir, mountpoint, socket: control.socketPath, startedAt: new Date().toISOString(), transport: mounted.transport }
  writeFileAtomic(path.join(storeDir, DAEMON_FILE), JSON.stringify(info, null, 2) + '\n')
  log.info({ store: info.store, mountpoint, socket: info.socket, sizeBytes: store.sizeBytes, transport: mounted.transport }, 'mounted')
  onReady(info)
  await done
  process.off('SIGINT', onSignal)
  process.off('SIGTERM', onSignal)
  process.off('SIGHUP', onSignal)
}
