import fs from 'node:fs'
import path from 'node:path'
import type { Test } from 'tap'
import { must, run, tmpDir } from './cli'

/**
 * A fresh tmpfs of `size` (like '40m') mounted for this test only: a real filesystem the test can
 * fill. Unmounted and removed at teardown. Needs root.
 */
export async function smallTmpfs (t: Test, name: string, size: string): Promise<string> {
  const dir = tmpDir(name)
  const disk = path.join(dir, 'disk')
  fs.mkdirSync(disk, { recursive: true })
  await must('mount', '-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', disk)
  t.teardown(async () => { await run('umount', ['-l', disk]); fs.rmSync(dir, { recursive: true, force: true }) })
  return disk
}
