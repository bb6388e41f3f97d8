import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError } from '../errors'
import { mountImages, type Mounted } from '../fuse/mount'
import { openStore } from '../pool/open-store'
import { parseDuration, readPolicy } from '../policy/policy'
import { archiveLink } from '../archive/link'
import { parseTarget } from '../archive/target'
import type { Logger } from '../store/logger'
import { writeFileAtomic } from '../store/config'
import { ops } from '../ops/ops'
import { ControlServer, type Handler } from './control'
import { DAEMON_FILE, controlSocketPath, type DaemonInfo } from './paths'

/** How often the daemon looks at its policy (tests shorten it). */
const POOL_TICK_MS = Number(process.env.LOGDISK_MAINTENANCE_TICK_MS ?? process.env.LOGDISK_POOL_TICK_MS ?? 2000)

/**
 * The mount daemon: holds the store open, serves the image folder over FUSE and answers the
 * control socket. Resolves when the mount is gone (unmount command, SIGINT or SIGTERM).
 * Nothing here may block the event loop while mounted: the kernel waits on this same thread
 * for every image I/O, so a synchronous child process would deadlock the mount.
 */
export async function runDaemon (storeDir: string, mountpoint: string, log: Logger, onReady: (info: DaemonInfo) => void): Promise<void> {
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

  const stop = (): Promise<void> => {
    if (stopping) return stopping
    stopping = (async () => {
      try {
        await mounted?.unmount()
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

  const handlers: Record<string, Handler> = {
    ...Object.fromEntries(Object.entries(ops).map(([name, op]) => [name, (args: Record<string, unknown>) => op(store, args, {})])),
    status: async args => ({ ...(await ops.status(store, args, {}) as object), mountpoint, pid: process.pid }),
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
    mounted = await mountImages(store, mountpoint, log)
  } catch (err) {
    await control?.close()
    await store.close()
    throw err
  }

  // Maintenance by policy, re-read each tick (`policy set` edits the file): pool growth and
  // shrink, background compaction every compact.every, then archiving when a target is set.
  let lastCompactMs = Date.now()
  let maintaining = false
  let archiveTarget = ''
  poolTimer = setInterval(() => {
    if (maintaining) return
    maintaining = true
    void (async () => {
      const policy = readPolicy(storeDir)
      pool.setPolicy(policy)
      await pool.tick()
      if (policy['archive.target'] !== archiveTarget) {
        archiveTarget = policy['archive.target']
        store.attachArchive(archiveTarget === '' ? undefined : archiveLink(parseTarget(archiveTarget), store.config.uuid))
      }
      const every = parseDuration(policy['compact.every']) ?? 0
      if (every > 0 && Date.now() - lastCompactMs >= every) {
        lastCompactMs = Date.now()
        await ops.compact(store, {}, {})
        if (archiveTarget !== '') await ops.archive(store, {}, {})
      }
    })().catch(err => log.error({ err: (err as Error).message }, 'background maintenance failed; will retry'))
      .finally(() => { maintaining = false })
  }, POOL_TICK_MS)
  poolTimer.unref()

  const onSignal = (signal: string): void => {
    log.info({ signal }, 'unmounting on signal')
    stop().catch(err => log.error({ err: (err as Error).message }, 'not unmounting: ' + (err instanceof LogdiskError ? err.message : String(err))))
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)

  const info: DaemonInfo = { pid: process.pid, store: storeDir, mountpoint, socket: control.socketPath, startedAt: new Date().toISOString() }
  writeFileAtomic(path.join(storeDir, DAEMON_FILE), JSON.stringify(info, null, 2) + '\n')
  log.info({ store: info.store, mountpoint, socket: info.socket, sizeBytes: store.sizeBytes }, 'mounted')
  onReady(info)
  await done
  process.off('SIGINT', onSignal)
  process.off('SIGTERM', onSignal)
}
