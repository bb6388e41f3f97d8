import fs from 'node:fs'
import path from 'node:path'
import type { Test } from 'tap'
import { CLI, cleanup, must, run, tmpDir } from './cli'

/**
 * A 16 MiB store (2 MiB segments) on a tmpfs of its own, so its internal pool volume has no
 * declared capacity and shares that filesystem with nothing else; policies set, mounted with
 * a 200 ms maintenance tick. Torn down (unmounted, tmpfs and all) after the test.
 */
export async function tmpfsStore (t: Test, name: string, opts: { tmpfsMiB: number, policy: string[] }): Promise<{ disk: string, store: string, img: string }> {
  const dir = tmpDir(name)
  t.teardown(() => cleanup(dir, t))
  const disk = path.join(dir, 'disk')
  fs.mkdirSync(disk)
  await must('mount', '-t', 'tmpfs', '-o', `size=${opts.tmpfsMiB}m`, 'tmpfs', disk)
  const store = path.join(disk, 'store')
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(mnt)
  await must(process.execPath, CLI, 'create', store, '--size', '16M', '--segment-size', '2M')
  await must(process.execPath, CLI, 'policy', 'set', store, ...opts.policy)
  const r = await run(process.execPath, [CLI, 'mount', store, mnt], { env: { LOGDISK_MAINTENANCE_TICK_MS: '200' } })
  if (r.code !== 0) throw new Error(`mount failed: ${r.stderr}`)
  return { disk, store, img: path.join(mnt, 'current.img') }
}
