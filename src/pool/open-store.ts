import path from 'node:path'
import { historyKeepMs, readPolicy } from '../policy/policy'
import { Store, type OpenOptions } from '../store'
import { readConfig } from '../store/config'
import { silentLogger } from '../store/logger'
import { Pool } from './pool'
import { archiveLink } from '../archive/link'
import { parseTarget } from '../archive/target'

/**
 * Opens a store with its pool as the home of its segments: what the CLI and the mount daemon
 * use. (Store.open alone serves library users whose stores have no external volumes.)
 */
export async function openStore (dir: string, opts: Omit<OpenOptions, 'home'> = {}, initialPoolDirs: string[] = []): Promise<{ store: Store, pool: Pool }> {
  dir = path.resolve(dir)
  const config = readConfig(dir)
  const policy = readPolicy(dir)
  const pool = Pool.open(dir, config, policy, opts.logger ?? silentLogger, initialPoolDirs)
  const target = policy['archive.target']
  const archive = target === '' ? undefined : archiveLink(parseTarget(target), config.uuid)
  const store = await Store.open(dir, { historyKeepMs: historyKeepMs(policy), ...opts, home: pool, archive })
  pool.attach(store)
  return { store, pool }
}

/** The pool a store was opened with, when it was opened through openStore. */
export function poolOf (store: Store): Pool | undefined {
  return store.home instanceof Pool ? store.home : undefined
}
