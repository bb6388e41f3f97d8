// A damaged index (a garbled CURRENT, a corrupt table file) was refused with LevelDB's own
// words (LEVEL_CORRUPTION, or an IO error naming a read-only open's temporary copy), with no
// way out (a hostile test, helper-62). The line names the store's index and the way: move it
// aside, and the next command rebuilds it from the log, every byte there.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { logdisk, tmpDir } from './helpers/cli'

const MiB = 1024 * 1024

t.test('a garbled index: one line naming the way out, which rebuilds it with every byte', { timeout: 120_000 }, async t => {
  const dir = tmpDir('index-damaged')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const store = path.join(dir, 's')
  t.equal((await logdisk('create', store, '--size', '16M', '--segment-size', '2M')).code, 0)
  const data = crypto.randomBytes(5 * MiB)
  {
    const { store: s } = await openStore(store)
    try { await s.write(0, data); await s.snapshot({ name: 'a' }) } finally { await s.close() }
  }
  fs.writeFileSync(path.join(store, 'index', 'CURRENT'), 'zzz\n')
  const index = path.join(store, 'index')
  for (const args of [['status', store], ['snapshot', store, '--name', 'b']]) {
    const r = await logdisk(...args)
    t.equal(r.code, 1, `${args[0]} is refused`)
    t.notMatch(r.stderr, /logdisk-ro-/, `${args[0]}: the line names no temporary copy of the index (${r.stderr.trim()})`)
    t.match(r.stderr, new RegExp(`^logdisk: ${store}: cannot open its index \\(.*\\); if it is damaged \\(a garbled CURRENT or MANIFEST\\), move ${index} aside and run the command again to rebuild it from the log\\n$`), 'in one line naming the way out')
  }
  fs.renameSync(index, `${index}.damaged`)
  const out = path.join(dir, 'a.img')
  const restore = await logdisk('restore', store, '--at', 'a', '--out', out)
  t.equal(restore.code, 0, `rebuilt from the log: ${restore.stderr}`)
  if (restore.code === 0) t.ok(fs.readFileSync(out).subarray(0, data.length).equals(data), 'every byte of snapshot a')
  t.equal((await logdisk('verify', store)).code, 0, 'and verify is clean')
})
