import path from 'node:path'
import { LogdiskError } from '../errors'
import { readPolicy, volumeIdPolicy } from '../policy/policy'
import { restoreImage, type Store } from '../store'

/**
 * The commands that act on a store, written once. The CLI runs them on the store directly
 * when it is not mounted; the mount daemon runs the same functions for requests on its
 * control socket. Arguments and results are plain JSON.
 */
export interface OpContext {
  /** Progress of long operations, shown by the CLI on a terminal (direct runs only). */
  onProgress?: (done: number, total: number) => void
}

type Args = Record<string, unknown>
export type Op = (store: Store, args: Args, ctx: OpContext) => Promise<unknown>

const str = (args: Args, key: string): string | undefined => typeof args[key] === 'string' ? args[key] as string : undefined

export const ops: Record<string, Op> = {
  status: async store => store.status(),
  verify: store => store.verify(),
  flush: store => store.flush(),

  snapshot: async (store, args) => {
    const policy = volumeIdPolicy(readPolicy(store.dir))
    return store.snapshot({ name: str(args, 'name'), id: args.id === undefined ? undefined : Number(args.id), frozen: args.frozen === true, idPolicy: policy })
  },

  snapshots: async store => {
    const pinned = await store.snapshotPinnedBytes()
    return store.snapshots().map(s => ({ ...s, time: new Date(s.timeMs).toISOString(), pinnedBytes: pinned.get(s.seq) ?? 0 }))
  },

  delete: async (store, args) => store.deleteSnapshot(String(args.name)),

  sync: async (store, args) => store.syncPoint(str(args, 'note') ?? '', args.frozen === true),

  log: async (store, args) => {
    let from = 1
    let to = Number.MAX_SAFE_INTEGER
    const name = str(args, 'snapshot')
    if (name !== undefined) {
      const snap = store.snapshotNamed(name)
      from = (store.snapshots().filter(s => s.seq < snap.seq).pop()?.seq ?? 0) + 1
      to = snap.seq
    }
    const out = []
    for await (const e of store.entries(from, to)) out.push(e)
    return out
  },

  restore: async (store, args, ctx) => {
    const out = str(args, 'out')
    if (!out || !path.isAbsolute(out)) throw new LogdiskError('BAD_ARGUMENT', 'restore needs --out FILE')
    const point = await store.resolvePoint(String(args.at))
    const result = await restoreImage(store, point.seq, out, { force: args.force === true, onProgress: ctx.onProgress })
    return { ...point, out, ...result }
  }
}
