import path from 'node:path'
import { LogdiskError } from '../errors'
import { request } from '../daemon/control'
import { readDaemonInfo } from '../daemon/paths'
import { ops, type OpContext } from '../ops/ops'
import type { Store } from '../store'
import { openStore } from '../pool/open-store'

/** Direct runs print only the command's own output; warnings go to stderr, one line each. */
const quietLogger = {
  info () {},
  warn (_fields: object, msg: string) { process.stderr.write(`logdisk: warning: ${msg}\n`) },
  error (_fields: object, msg: string) { process.stderr.write(`logdisk: error: ${msg}\n`) }
}

/**
 * Runs an operation (src/ops) on a store: directly, under the store's lock, when it is not
 * mounted; through the mount daemon's control socket when it is (the daemon holds the lock).
 * Either way the command sees the same store.
 */
export async function runOp<T> (storeArg: string, op: string, args: Record<string, unknown> = {}, ctx: OpContext = {}): Promise<T> {
  const dir = path.resolve(storeArg)
  let store: Store
  try {
    store = (await openStore(dir, { holder: `logdisk ${op}`, logger: quietLogger })).store
  } catch (err) {
    if (!(err instanceof LogdiskError) || err.code !== 'STORE_LOCKED') throw err
    const daemon = readDaemonInfo(dir)
    if (!daemon) throw err
    try {
      return await request<T>(daemon.socket, op, args)
    } catch (inner) {
      if (inner instanceof LogdiskError && inner.code === 'NOT_MOUNTED') throw err
      throw inner
    }
  }
  try {
    return await ops[op](store, args, ctx) as T
  } finally {
    await store.close()
  }
}
