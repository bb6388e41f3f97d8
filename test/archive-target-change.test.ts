// Changing archive.target while segments are archived under the current one was accepted;
// the store then read those segments from the new target and failed (EIO through the mount),
// and setting the old target back made the segments archived meanwhile fail instead (a
// hostile test, helper-56). A new target must hold what the current one holds for the store.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { logdisk, tmpDir } from './helpers/cli'

const MiB = 1024 * 1024
const sha = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex')

t.test('archive.target changes only to a target holding the archived segments', { timeout: 120_000 }, async t => {
  const dir = tmpDir('archive-target-change')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const store = path.join(dir, 's')
  const [a, b] = [path.join(dir, 'a'), path.join(dir, 'b')]
  fs.mkdirSync(a)
  fs.mkdirSync(b)
  t.equal((await logdisk('create', store, '--size', '64M', '--segment-size', '4M')).code, 0)
  t.equal((await logdisk('policy', 'set', store, `archive.target=${a}`)).code, 0)
  const data = crypto.randomBytes(24 * MiB)
  {
    const { store: s } = await openStore(store)
    try { await s.write(0, data); await s.flush(); await s.archive({ workingSet: 1 }) } finally { await s.close() }
  }
  const objects = fs.readdirSync(a).filter(n => n.endsWith('.ldarch'))
  t.ok(objects.length > 0, `segments archived in a: ${objects.length}`)

  const policy = fs.readFileSync(path.join(store, 'policy.json'), 'utf8')
  const moved = await logdisk('policy', 'set', store, `archive.target=${b}`)
  t.equal(moved.code, 1, 'a target that lacks the archived segments is refused')
  t.match(moved.stderr, new RegExp(`^logdisk: archive\\.target=${b}: ${objects.length} segment\\(s\\) archived in ${a} are not there .*copy the objects .* first, then set it; nothing was changed\\n$`))
  const unset = await logdisk('policy', 'set', store, 'archive.target=')
  t.equal(unset.code, 1, 'so is no target at all')
  t.match(unset.stderr, /without a target they cannot be read; nothing was changed/)
  t.equal(fs.readFileSync(path.join(store, 'policy.json'), 'utf8'), policy, 'policy.json is unchanged')

  for (const n of fs.readdirSync(a)) fs.copyFileSync(path.join(a, n), path.join(b, n))
  const copied = await logdisk('policy', 'set', store, `archive.target=${b}`)
  t.equal(copied.code, 0, `with the objects copied, the change is taken: ${copied.stderr}`)
  fs.rmSync(path.join(store, 'cache'), { recursive: true, force: true })
  fs.rmSync(a, { recursive: true }) // the old target gone: what reads comes from b
  const { store: s } = await openStore(store)
  try {
    t.equal(sha(await s.read(0, data.length)), sha(data), 'and the image reads from the new target')
  } finally {
    await s.close()
  }
})
