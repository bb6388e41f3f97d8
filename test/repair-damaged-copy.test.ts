import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { logdisk } from './helpers/cli'
import { damageSegmentCopy, mirroredStore, sha, truncateSegmentCopy } from './helpers/mirrored-store'

/**
 * With two copies of every segment (mirror=2), a read that meets a copy whose data fails its
 * checksum is served from the other copy and says: run logdisk verify, then pool repair. pool
 * repair judged copies by their headers only, made no copy, and the store stayed one fault
 * from losing data (found by a hostile test, 2026-12-06). It must replace the damaged copy
 * from the intact one; verify names the damaged copy's volume.
 */

t.test('pool repair replaces a mirror copy that fails its checksums', { timeout: 180_000 }, async t => {
  const { dir, store, v1, image } = await mirroredStore('repair-damaged')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  t.equal((await logdisk('verify', store)).code, 0, 'both copies verify before the damage')
  t.ok(damageSegmentCopy(v1), 'segment 1 has a copy on the first volume, now damaged')

  const before = await logdisk('verify', store)
  t.not(before.code, 0, 'verify finds the damage')
  t.match(before.stdout + before.stderr, /seg-000000000001\.log \(copy on pool volume [^)]+\) offset \d+: block \d+ fails its checksum/, 'and names the copy\'s volume')

  const repair = await logdisk('pool', 'repair', store, '--json')
  t.equal(repair.code, 0, `pool repair: ${repair.stderr}`)
  t.equal(JSON.parse(repair.stdout).copies, 1, 'made one copy: the damaged one, replaced')

  const after = await logdisk('verify', store)
  t.equal(after.code, 0, `verify is clean after the repair: ${after.stdout}${after.stderr}`)
  const out = path.join(dir, 'a.img')
  const restore = await logdisk('restore', store, '--at', 'a', '--out', out)
  t.equal(restore.code, 0, `restore: ${restore.stderr}`)
  t.notMatch(restore.stderr, /fails its checksum/, 'no copy fails its checksum any more')
  if (restore.code === 0) t.equal(sha(fs.readFileSync(out)), sha(image), 'the bytes written')
})

// Found by a hostile test (helper-42): a sealed copy cut short was read as the answer (a short
// read is no error), so reads failed with EIO while the other copy was whole, verify reported
// thousands of blocks "indexed but not in the log", and pool repair made no copy (a copy cut
// short passes the checksums of what it still has). Each volume's copy in turn: one of them
// is the copy reads are served from first.
for (const which of ['v1', 'v2'] as const) {
  t.test(`a mirror copy cut short (on ${which}): reads go around it, verify names it, pool repair replaces it`, { timeout: 180_000 }, async t => {
    const m = await mirroredStore(`repair-truncated-${which}`)
    t.teardown(() => fs.rmSync(m.dir, { recursive: true, force: true }))
    t.ok(truncateSegmentCopy(m[which]), `segment 1 has a copy on ${which}, now cut short`)
    const out = path.join(m.dir, 'a.img')
    const restore = await logdisk('restore', m.store, '--at', 'a', '--out', out)
    t.equal(restore.code, 0, `restore reads around the short copy: ${restore.stderr}`)
    if (restore.code === 0) t.equal(sha(fs.readFileSync(out)), sha(m.image), 'the bytes written')
    fs.rmSync(out, { force: true })

    const before = await logdisk('verify', m.store)
    t.not(before.code, 0, 'verify finds the damage')
    t.match(before.stdout + before.stderr, /seg-000000000001\.log \(copy on pool volume [^)]+\) offset \d+: truncated entry/, 'and names the copy')
    t.notMatch(before.stdout + before.stderr, /indexed but not in the log/, 'not as blocks missing from the log')

    const repair = await logdisk('pool', 'repair', m.store, '--json')
    t.equal(repair.code, 0, `pool repair: ${repair.stderr}`)
    t.equal(JSON.parse(repair.stdout).copies, 1, 'made one copy: the short one, replaced')
    const after = await logdisk('verify', m.store)
    t.equal(after.code, 0, `verify is clean after the repair: ${after.stdout}${after.stderr}`)
    const again = await logdisk('restore', m.store, '--at', 'a', '--out', out)
    t.equal(again.code, 0)
    t.notMatch(again.stderr, /served from another copy/, 'no copy is gone around any more')
    if (again.code === 0) t.equal(sha(fs.readFileSync(out)), sha(m.image), 'the bytes written')
  })
}
