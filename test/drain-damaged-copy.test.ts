import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { logdisk } from './helpers/cli'
import { damageSegmentCopy, mirroredStore, sha, truncateSegmentCopy } from './helpers/mirrored-store'

/**
 * With two copies of every segment (mirror=2), `pool remove` of a volume whose copy of a
 * segment fails its checksums (or was cut short) moved that copy as it was: the drain left the
 * damage in the store, on the new volume (verify named it there; pool repair had to replace
 * it). It must copy the intact copy instead: after the drain, verify is clean.
 */
for (const [how, harm] of [['fails its checksums', damageSegmentCopy], ['cut short', truncateSegmentCopy]] as const) {
  t.test(`pool remove of a volume whose mirror copy ${how} moves the intact copy`, { timeout: 180_000 }, async t => {
    const { dir, store, v1, image } = await mirroredStore(`drain-damaged-${how.split(' ')[0]}`)
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
    const v3 = path.join(dir, 'v3')
    t.equal((await logdisk('pool', 'add', store, v3)).code, 0, 'a third volume to drain onto')
    t.ok(harm(v1), `segment 1's copy on the first volume, now ${how}`)

    const remove = await logdisk('pool', 'remove', store, v1, '--json')
    t.equal(remove.code, 0, `pool remove: ${remove.stderr}`)
    t.ok(JSON.parse(remove.stdout || '{}').moved > 0, 'moved segments off the volume')
    t.notOk(fs.readdirSync(v3, { recursive: true }).map(String).some(f => f.endsWith('.copy')), 'no copy left half-made')

    const verify = await logdisk('verify', store)
    t.equal(verify.code, 0, `verify is clean after the drain: ${verify.stdout}${verify.stderr}`)
    const out = path.join(dir, 'a.img')
    const restore = await logdisk('restore', store, '--at', 'a', '--out', out)
    t.equal(restore.code, 0, `restore: ${restore.stderr}`)
    t.notMatch(restore.stderr, /served from another copy|fails its checksum/, 'no copy is gone around')
    if (restore.code === 0) t.equal(sha(fs.readFileSync(out)), sha(image), 'the bytes written')
  })
}
