import path from 'node:path'
import { LogdiskError } from '../errors'
import { request } from '../daemon/control'
import { readDaemonInfo } from '../daemon/paths'
import { Store } from '../store'

/**
 * Runs a command on a store: directly, under the store's lock, when it is not mounted; through
 * the mount daemon's control socket when it is (the daemon holds the lock). Either way the
 * command sees the same store.
 */
export async function onStore<T> (
  storeArg: string, command: string,
  direct: (store: Store) => Promise<T>,
  remote: { op: string, args?: Record<string, unknown> }
): Promise<T> {
  const dir = path.resolve(storeArg)
  let store: Store
  try {
    store = await Store.open(dir, { holder: `logdisk ${command}` })
  } catch (err) {
    if (!(err instanceof LogdiskError) || err.code !== 'STORE_LOCKED') throw err
    const daemon = readDaemonInfo(dir)
    if (!daemon) throw err
    try {
      return await request<T>(daemon.socket, remote.op, remote.args)
    } catch (inner) {
      if (inner instanceof LogdiskError && inner.code === 'NOT_MOUNTED') throw err
      throw inner
    }
  }
  try {
    return await direct(store)
  } finally {
    await store.close()
  }
}
