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
  t.match(before.stdout + before.stderr, new RegExp(`${v1}/[0-9a-f-]+/seg-000000000001\\.log \\(copy on pool volume [^)]+\\) offset \\d+: block \\d+ fails its checksum`), 'and names the copy by its path and volume')

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

// Found by a hostile test (helper-61): with each copy damaged in a different block, every
// block still had an intact copy, yet pool repair said "made 0 copies" and exited 0, and a
// drain moved a damaged copy as it was; with a copy then lost, repair copied the damaged one
// (reads of its bad block failed for good). Both now heal the copies block by block from
// each other; a block bad in every copy is said, and repair exits 1.
t.test('each copy damaged in another block: pool repair heals both from each other', { timeout: 180_000 }, async t => {
  const { dir, store, v1, v2, image } = await mirroredStore('repair-both-damaged')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  t.ok(damageSegmentCopy(v1, 2_000_000) && damageSegmentCopy(v2, 3_000_000), 'segment 1 damaged in one block on v1 and another on v2')
  const repair = await logdisk('pool', 'repair', store, '--json')
  t.equal(repair.code, 0, `pool repair: ${repair.stderr}`)
  const r = JSON.parse(repair.stdout)
  t.same({ healed: r.healed, damaged: r.damaged }, { healed: 2, damaged: [] }, 'two blocks healed, none left damaged')
  const after = await logdisk('verify', store)
  t.equal(after.code, 0, `verify is clean after the repair: ${after.stdout}${after.stderr}`)
  const out = path.join(dir, 'a.img')
  const restore = await logdisk('restore', store, '--at', 'a', '--out', out)
  t.equal(restore.code, 0, restore.stderr)
  t.notMatch(restore.stderr, /fails its checksum|served from another copy/, 'no copy is gone around any more')
  if (restore.code === 0) t.equal(sha(fs.readFileSync(out)), sha(image), 'the bytes written')
})

t.test('each copy damaged in another block: pool remove heals them before it moves one', { timeout: 180_000 }, async t => {
  const { dir, store, v1, v2, image } = await mirroredStore('drain-both-damaged')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  t.equal((await logdisk('pool', 'add', store, path.join(dir, 'v3'))).code, 0, 'a third volume to drain onto')
  t.ok(damageSegmentCopy(v1, 2_000_000) && damageSegmentCopy(v2, 3_000_000), 'segment 1 damaged in one block on v1 and another on v2')
  const remove = await logdisk('pool', 'remove', store, v1)
  t.equal(remove.code, 0, `pool remove: ${remove.stderr}`)
  const after = await logdisk('verify', store)
  t.equal(after.code, 0, `verify is clean after the drain: ${after.stdout}${after.stderr}`)
  const out = path.join(dir, 'a.img')
  const restore = await logdisk('restore', store, '--at', 'a', '--out', out)
  t.equal(restore.code, 0, restore.stderr)
  if (restore.code === 0) t.equal(sha(fs.readFileSync(out)), sha(image), 'the bytes written')
})

t.test('the same block damaged in both copies: pool repair says so and exits 1', { timeout: 180_000 }, async t => {
  const { dir, store, v1, v2 } = await mirroredStore('repair-same-block')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  t.ok(damageSegmentCopy(v1, 2_000_000) && damageSegmentCopy(v2, 2_000_000) && damageSegmentCopy(v2, 3_000_000), 'one block bad in both copies, another on v2 alone')
  const repair = await logdisk('pool', 'repair', store)
  t.equal(repair.code, 1, 'pool repair exits 1')
  t.match(repair.stdout, /^made 0 copies; healed 1 block\(s\) that failed their checksums in one copy from another\n$/, 'the block it could heal it healed')
  t.equal(repair.stderr, 'logdisk: segment(s) 1: no copy passes its checksums, and they could not be mended from each other; reads of what no copy holds intact fail (logdisk verify names it)\n', 'and says in one line what it could not')
  const verify = await logdisk('verify', store)
  t.not(verify.code, 0, 'verify still names the damage')
})

// Found by a hostile test (helper-64): pool repair stopped at the first segment it could not
// place a copy of, leaving every later one unrepaired. It repairs the others and names those.
t.test('pool repair with no room for one segment\'s copy repairs the others and names it', { timeout: 180_000 }, async t => {
  const { dir, store, v1, v2, image } = await mirroredStore('repair-no-room')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const copyOf = (volume: string, id: number): string => {
    const rel = fs.readdirSync(volume, { recursive: true }).map(String).find(f => f.endsWith(`seg-00000000000${id}.log`))!
    return path.join(volume, rel)
  }
  fs.rmSync(copyOf(v2, 1)) // its copy can only go back to v2, which gets no room below
  fs.rmSync(copyOf(v1, 2)) // its copy goes back to v1, which has room
  t.equal((await logdisk('pool', 'add', store, v2, '--capacity', '4M')).code, 0, 'v2 is given no room to spare')
  const repair = await logdisk('pool', 'repair', store, '--json')
  t.equal(repair.code, 1, 'pool repair exits 1')
  t.equal(JSON.parse(repair.stdout).copies, 1, 'it made the copy it had room for (segment 2)')
  t.same(JSON.parse(repair.stdout).unplaced, [1], 'and names the one it had not')
  t.match(repair.stderr, /segment\(s\) 1: no pool volume has room for their missing copies; add one \(logdisk pool add .* DIR\) and run pool repair again/, 'in one line')
  t.ok(fs.existsSync(copyOf(v1, 2)), 'segment 2 has its copy on v1 again')
  const out = path.join(dir, 'a.img')
  const restore = await logdisk('restore', store, '--at', 'a', '--out', out)
  t.equal(restore.code, 0, restore.stderr)
  if (restore.code === 0) t.equal(sha(fs.readFileSync(out)), sha(image), 'every byte reads')
})
