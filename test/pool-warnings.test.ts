// The pool's growth warning ("pool use N% crossed pool.growAt and no spare volume is left")
// stayed in status and pool list after the pool fell back under pool.growAt (a compaction,
// a shrink), until the next pool add (a hostile test, helper-51). It goes when use falls
// back, and the next crossing warns again.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { Pool } from '../src/pool/pool'
import { defaultPolicy } from '../src/policy/policy'
import { readConfig } from '../src/store/config'
import { silentLogger } from '../src/store/logger'
import { Store } from '../src/store/store'

const SEGMENT = 1024 * 1024 + 64 * 1024

t.test('the growth warning goes when use falls back under pool.growAt, and comes again at the next crossing', async t => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-pool-warnings-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const store = path.join(dir, 'store')
  await Store.create(store, { sizeBytes: 8 * 1024 * 1024, segmentBytes: SEGMENT })
  const volume = path.join(dir, 'v1')
  fs.mkdirSync(volume)
  // Created on v1 (create --pool): the internal volume takes no segments.
  const pool = Pool.open(store, readConfig(store), defaultPolicy(), silentLogger, [volume])
  pool.add(volume, 4 * SEGMENT)
  const id = pool.status().volumes.find(v => v.dir === volume)!.id
  const growWarnings = (): string[] => pool.status().warnings.filter(w => w.startsWith('pool use '))
  for (let s = 0; s < 4; s++) pool.occupied(s, [id])
  await pool.tick()
  t.match(growWarnings().join('\n'), /no spare volume is left/, 'full: the warning')
  for (let s = 0; s < 3; s++) pool.vacated(s, [id])
  await pool.tick()
  t.same(growWarnings(), [], 'a quarter full: gone')
  for (let s = 0; s < 3; s++) pool.occupied(s, [id])
  await pool.tick()
  t.match(growWarnings().join('\n'), /no spare volume is left/, 'full again: said again')
})
