import path from 'node:path'
import type { Command } from 'commander'
import { LogdiskError } from '../../errors'
import { makeClone, parentOf, promote, readCloneRecord } from '../../clone/clone'
import { isParentError, openStore } from '../../app/open'
import { runOp } from '../on-store'
import { printJson, warn } from '../output'
import { checkCreatable } from './create'
import fs from 'node:fs'
import { parseTarget } from '../../archive/parse-target'
import { CONFIG_FILE } from '../../store/config'
import { MANIFEST_PREFIX } from '../../replicate/format'
import { REPLICA_PARENT_FILE, cloneFromReplica, releaseReplicaParent, replicaParentDir } from '../../replicate/clone-replica'
import { formatBytes } from '../units'

export function register (program: Command): void {
  program.command('clone <store> <snapshot> <newstore>')
    .description('make a writable clone of a snapshot in O(1): a new store whose unwritten blocks read from the snapshot')
    .option('--json', 'print {clone, parent, snapshot, ms}')
    .action(async (storeArg: string, snapshot: string, newArg: string, opts: { json?: boolean }) => {
      const started = Date.now()
      const parent = path.resolve(storeArg)
      // A replica: s3://..., file:///..., or a directory holding a replica's objects (no store.json).
      if (/^[a-z0-9]+:\/\//.test(storeArg) || (fs.existsSync(storeArg) && !fs.existsSync(path.join(storeArg, CONFIG_FILE)) && fs.readdirSync(storeArg).some(n => n.startsWith(MANIFEST_PREFIX)))) {
        const dir = path.resolve(newArg)
        checkCreatable(dir)
        const spec = /^[a-z0-9]+:\/\//.test(storeArg) ? storeArg : parent
        const target = parseTarget(spec, process.env, { role: 'replica' })
        try {
          const r = await cloneFromReplica(target, spec, snapshot, dir)
          if (opts.json) return printJson({ clone: dir, parent: r.parent, from: spec, snapshot, ms: Date.now() - started, recovered: r.recovered, dependency: r.dependency })
          console.log(`cloned snapshot ${snapshot} of the replica ${spec} into ${dir} in ${Date.now() - started} ms (${formatBytes(r.recovered.bytes)} fetched; it reads through to ${r.parent}, a read-only copy of the replica whose older segments are fetched from ${spec} on demand)`)
        } finally {
          await target.close().catch(() => undefined)
        }
        return
      }
      const snaps = await runOp<Array<{ name: string, seq: number, sizeBytes?: number }>>(parent, 'snapshots')
      const snap = snaps.find(s => s.name === snapshot)
      if (!snap) throw new LogdiskError('NOT_FOUND', `${parent} has no snapshot ${snapshot} (logdisk snapshots ${parent} lists them)`)
      const dir = path.resolve(newArg)
      checkCreatable(dir)
      await makeClone(parent, snap, dir)
      if (opts.json) return printJson({ clone: dir, parent, snapshot, ms: Date.now() - started })
      console.log(`cloned snapshot ${snapshot} of ${parent} into ${dir} in ${Date.now() - started} ms (nothing copied; it reads through to ${parent}, which must stay, unmounted while the clone is used)`)
    })
  program.command('promote <clone>')
    .description('copy into a clone what it still reads from its parent, so that it stands alone (unmounted clones only)')
    .option('--json', 'print {clone, blocks, parent, snapshot}')
    .action(async (cloneArg: string, opts: { json?: boolean }) => {
      const dir = path.resolve(cloneArg)
      if (!readCloneRecord(dir)) {
        // A promote that died after the clone stood alone (clone.json gone) but before its
        // hidden replica parent went: finish it, rather than leave that for a hand to remove.
        if (fs.existsSync(path.join(replicaParentDir(dir), REPLICA_PARENT_FILE))) {
          const released = await releaseReplicaParent(dir)
          if (released.warning) warn(released.warning)
          if (opts.json) return printJson({ clone: dir, blocks: 0, parent: released.removed, snapshot: null, removedParent: released.removed })
          return console.log(`promoted ${dir} already; finished the interrupted promote: removed ${released.removed}`)
        }
        throw new LogdiskError('BAD_ARGUMENT', `${dir} is not a clone (it has no clone.json): nothing to promote`)
      }
      let store
      try {
        store = (await openStore(dir, { holder: 'logdisk promote' })).store
      } catch (err) {
        if (err instanceof LogdiskError && err.code === 'STORE_LOCKED' && !isParentError(err)) throw new LogdiskError('STORE_LOCKED', `${dir} is mounted or in use: unmount it before promoting it (a write landing during the copy could be overwritten)`, err)
        throw err
      }
      let result
      try {
        const p = parentOf(store)!
        result = { r: await promote(store, p.record, p.parent), record: p.record }
      } finally {
        await store.close() // and its parent
      }
      const { r, record } = result
      // A clone of a replica: its hidden parent goes, and its dependency on the replica with it.
      const hidden = record.parent === replicaParentDir(dir) && fs.existsSync(path.join(record.parent, REPLICA_PARENT_FILE))
      const released = hidden ? await releaseReplicaParent(dir) : undefined
      if (released?.warning) warn(released.warning)
      if (opts.json) printJson({ clone: dir, blocks: r.blocks, parent: record.parent, snapshot: record.snapshot, removedParent: released?.removed ?? null, givenUpThrough: r.givenUp })
      else console.log(`promoted ${dir}: copied ${r.blocks} blocks from snapshot ${record.snapshot} of ${record.parent}; it no longer needs it${released ? ' (removed)' : ''}; points up to sequence ${r.givenUp}, which read through it, are given up`)
    })
}
