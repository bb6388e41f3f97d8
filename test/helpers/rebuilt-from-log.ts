import fs from 'node:fs'
import path from 'node:path'
import type { Test } from 'tap'
import type { Store } from '../../src/store/store'

/**
 * Checks that `s` reads as `model` and verifies, closes it, removes its index so that the next
 * open rebuilds it from the log alone, and checks the reopened store the same way (a trim whose
 * entry was freed would let a block's old data come back here). Returns the reopened store.
 */
export async function rebuiltFromLog (t: Test, s: Store, dir: string, open: () => Promise<Store>, model: Buffer): Promise<Store> {
  t.ok((await s.read(0, model.length)).equals(model), 'the image reads as the model')
  const report = await s.verify()
  t.ok(report.ok, `verify: ${report.problems.join('; ')}`)
  await s.close()
  fs.rmSync(path.join(dir, 'index'), { recursive: true })
  const again = await open()
  t.ok(again.recovery.rebuiltIndex, 'the index was rebuilt from the log')
  t.ok((await again.read(0, model.length)).equals(model), 'rebuilt: the image reads as the model (no trimmed block brings its old data back)')
  t.ok((await again.verify()).ok, 'rebuilt: verify is clean')
  return again
}
