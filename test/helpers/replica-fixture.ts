// What the replication tests share: reproducible data, a temporary directory per test, and
// the sha256 of a whole image read through the store.
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { Test } from 'tap'
import { Store } from '../../src/store'
import { recordIdentity } from '../../src/store/identity'
import { applyAssignments, defaultPolicy, writePolicy } from '../../src/policy/policy'
import { openStore } from '../../src/app/open'
import type { ArchiveTarget } from '../../src/archive'

const MiB = 1024 * 1024

/** `bytes` of pseudo-random data, the same for the same label and seed. */
export function labelledPattern (label: string, seed: number, bytes: number): Buffer {
  const key = crypto.createHash('sha256').update(`${label} ${seed}`).digest()
  return crypto.createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(bytes))
}

/** A directory under the temp folder, removed when the test ends. */
export function testTmp (t: Test, prefix: string, name: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `logdisk-${prefix}-${name}-`))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** sha256 (hex) of current.img, or of a snapshot's image. */
export async function imageSha (store: Store, snapshot?: string): Promise<string> {
  const h = crypto.createHash('sha256')
  for (let off = 0; off < store.sizeBytes; off += 4 * MiB) {
    h.update(snapshot === undefined ? await store.read(off, 4 * MiB) : await store.readSnapshot(snapshot, off, 4 * MiB))
  }
  return h.digest('hex')
}

/** Polls `cond` every 50 ms until it holds; throws naming `what` after `ms`. */
export async function until (what: string, cond: () => Promise<boolean> | boolean, ms = 90_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

/** A new store at `dir` whose policy replicates to `spec` (more policy `assignments` too), opened with a 100 ms checkpoint. */
export async function newReplicatedStore (dir: string, spec: string, geometry: { sizeBytes: number, segmentBytes: number }, assignments: string[] = []): Promise<Store> {
  const config = await Store.create(dir, geometry)
  recordIdentity(dir, config)
  writePolicy(dir, applyAssignments(defaultPolicy(), [`replicate.target=${spec}`, ...assignments]))
  return (await openStore(dir, { checkpointIntervalMs: 100 })).store
}

/**
 * `inner`, with `before(op, firstArg)` awaited ahead of every call but describe and close: a
 * target that fails (throw there) or hangs (wait there) on demand, or one that records its calls.
 */
export function interceptedTarget (inner: ArchiveTarget, before: (op: string, arg: string) => Promise<void> | void): ArchiveTarget {
  return new Proxy(inner, {
    get (obj, prop, recv) {
      const v = Reflect.get(obj, prop, recv)
      if (typeof v !== 'function') return v
      if (prop === 'describe' || prop === 'close') return v.bind(obj)
      return async (...args: unknown[]) => {
        await before(String(prop), String(args[0] ?? ''))
        return await (v as (...a: unknown[]) => Promise<unknown>).apply(obj, args)
      }
    }
  })
}
