// Stores for the send/receive tests that drive the library directly: a store per side, and
// a snapshot cut and sent as a stream file in one step.
import path from 'node:path'
import { openStore } from '../../src/app/open'
import { sendStreamTo } from '../../src/copy/send'
import type { SnapshotRecord } from '../../src/store'
import { Store } from '../../src/store/store'

/** A new store of `sizeBytes` with 4 KiB blocks at `root/name`, open, checkpointing only when asked. */
export async function newStreamStore (root: string, name: string, sizeBytes: number): Promise<Store> {
  const dir = path.join(root, name)
  await Store.create(dir, { sizeBytes, blockBytes: 4096 })
  return (await openStore(dir, { checkpointIntervalMs: 0 })).store
}

/** Cuts snapshot `name` of `src` and sends it to `root/<from><name>.stream`: full, or the increment since `from`. */
export async function cutAndSend (src: Store, root: string, name: string, from?: string): Promise<SnapshotRecord> {
  const snapshot = await src.snapshot({ name })
  await sendStreamTo(src, name, from, { out: path.join(root, `${from ?? ''}${name}.stream`) })
  return snapshot
}
