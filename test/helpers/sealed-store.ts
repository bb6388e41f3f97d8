import crypto from 'node:crypto'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import type { Test } from 'tap'
import type { OpenOptions } from '../../src/store/open-options'
import { Store } from '../../src/store/store'
import { scratchDir } from './sim-layer'

const MiB = 1024 * 1024

/** Bytes of `file` in the page cache (util-linux fincore). */
export function resident (file: string): number {
  return Number(execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', file]).toString().trim())
}

/**
 * A real store of 4 MiB segments with 14 MiB of random data written in 1 MiB writes and
 * flushed (its sealed segments synced and their pages dropped): its segment files with data (`files`: the sealed ones, then the current one; the
 * one made ahead for the next roll holds a header only and is left out), opened with `opts`.
 * Closed at teardown.
 */
export async function sealedStore (t: Test, name: string, opts: OpenOptions = {}): Promise<{ store: Store, data: Buffer, files: string[], sealed: string[] }> {
  const dir = scratchDir(t, name)
  await Store.create(dir, { sizeBytes: 64 * MiB, segmentBytes: 4 * MiB })
  const store = await Store.open(dir, { checkpointIntervalMs: 0, ...opts })
  t.teardown(() => store.close().catch(() => undefined))
  const data = crypto.randomBytes(14 * MiB)
  for (let at = 0; at < data.length; at += MiB) await store.write(at, data.subarray(at, at + MiB))
  await store.flush()
  const files = fs.readdirSync(path.join(dir, 'segments')).filter(f => f.endsWith('.log')).sort()
    .map(f => path.join(dir, 'segments', f)).filter(f => fs.statSync(f).size > 4096)
  return { store, data, files, sealed: files.slice(0, -1) }
}
