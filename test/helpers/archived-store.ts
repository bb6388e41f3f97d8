import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { openStore } from '../../src/app/open'
import { must, tmpDir } from './cli'

const MIB = 1024 * 1024

/**
 * A store (64 MiB volume, 4 MiB segments) with a directory archive target, 12 MiB of random
 * data written, and every sealed segment but the newest archived (its local copy gone).
 * The caller removes `dir`.
 */
export async function archivedStore (name: string): Promise<{ dir: string, store: string, archive: string }> {
  const dir = tmpDir(name)
  const store = path.join(dir, 's')
  const archive = path.join(dir, 'arch')
  fs.mkdirSync(archive)
  const cli = path.resolve('dist/src/cli/main.js')
  await must(process.execPath, cli, 'create', store, '--size', '64M', '--segment-size', '4M')
  await must(process.execPath, cli, 'policy', 'set', store, `archive.target=${archive}`)
  const { store: s } = await openStore(store)
  try {
    await s.write(0, crypto.randomBytes(12 * MIB))
    await s.flush()
    await s.archive({ workingSet: 1 })
  } finally {
    await s.close()
  }
  return { dir, store, archive }
}
