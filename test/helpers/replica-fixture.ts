// What the replication tests share: reproducible data, a temporary directory per test, and
// the sha256 of a whole image read through the store.
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { Test } from 'tap'
import type { Store } from '../../src/store'

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
