import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { openStore } from '../../src/app/open'
import { must, tmpDir } from './cli'

export const MIB = 1024 * 1024

/**
 * A store with two copies of every segment (mirror=2 on pool volumes v1 and v2, 4 MiB
 * segments), 12 MiB of random data written at offset 0 and snapshot `a` over it, every copy
 * made (`pool repair`). `image` is what snapshot a reads (the data, then zeros to 64 MiB).
 */
export async function mirroredStore (name: string): Promise<{ dir: string, store: string, v1: string, v2: string, image: Buffer }> {
  const dir = tmpDir(name)
  const store = path.join(dir, 's')
  const v1 = path.join(dir, 'v1'); const v2 = path.join(dir, 'v2')
  const cli = path.resolve('dist/src/cli/main.js')
  await must(process.execPath, cli, 'create', store, '--size', '64M', '--segment-size', '4M', '--pool', v1, '--pool', v2)
  await must(process.execPath, cli, 'policy', 'set', store, 'mirror=2')
  const data = crypto.randomBytes(12 * MIB)
  const { store: s } = await openStore(store)
  try { await s.write(0, data); await s.flush(); await s.snapshot({ name: 'a' }) } finally { await s.close() }
  await must(process.execPath, cli, 'pool', 'repair', store)
  return { dir, store, v1, v2, image: Buffer.concat([data, Buffer.alloc(52 * MIB)]) }
}

/** The copy of segment 1 on `volume` (undefined if none), with 64 bytes of a block's data at `at` inverted. */
export function damageSegmentCopy (volume: string, at = 2_000_000): string | undefined {
  const rel = fs.readdirSync(volume, { recursive: true }).map(String).find(f => f.endsWith('seg-000000000001.log'))
  if (rel === undefined) return undefined
  const file = path.join(volume, rel)
  const fd = fs.openSync(file, 'r+')
  try {
    const bytes = Buffer.alloc(64)
    fs.readSync(fd, bytes, 0, 64, at)
    for (let i = 0; i < 64; i++) bytes[i] ^= 0xff
    fs.writeSync(fd, bytes, 0, 64, at)
  } finally {
    fs.closeSync(fd)
  }
  return file
}

export const sha = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex')

/** The copy of segment 1 on `volume` (undefined if none), cut to 1,000,000 bytes (a sealed copy truncated). */
export function truncateSegmentCopy (volume: string): string | undefined {
  const rel = fs.readdirSync(volume, { recursive: true }).map(String).find(f => f.endsWith('seg-000000000001.log'))
  if (rel === undefined) return undefined
  fs.truncateSync(path.join(volume, rel), 1_000_000)
  return path.join(volume, rel)
}
