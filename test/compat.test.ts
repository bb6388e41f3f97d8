import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { STORE_FORMAT_VERSION } from '../src/store/format'
import { Store } from '../src/store/store'
import { FIXTURES } from './helpers/paths'

/**
 * Every released on-disk format stays readable (hypercore's test/compat.js pattern): the
 * fixture of each format, written once by that release (test/fixtures/make-format-N.mjs), is
 * opened by this code and must read exactly as its manifest says, with its index as written
 * and rebuilt from the log alone; then it must take writes.
 */
const sha = (buf: Buffer): string => crypto.createHash('sha256').update(buf).digest('hex')

for (const format of fs.readdirSync(FIXTURES).filter(n => /^format-\d+$/.test(n))) {
  t.test(`${format}: opens, reads, rebuilds and writes`, async t => {
    const fixture = path.join(FIXTURES, format)
    const manifest = JSON.parse(fs.readFileSync(path.join(fixture, 'manifest.json'), 'utf8'))
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `logdisk-compat-${format}-`))
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
    fs.cpSync(fixture, dir, { recursive: true })
    const size = manifest.sizeBytes as number

    const check = async (store: Store, when: string): Promise<void> => {
      t.equal(sha(await store.read(0, size)), manifest.images.current, `${when}: current image`)
      t.same(store.snapshots().map(s => s.name), manifest.snapshots.map((s: { name: string }) => s.name), `${when}: snapshots`)
      for (const s of manifest.snapshots) t.equal(sha(await store.readSnapshot(s.name, 0, size)), manifest.images[s.name], `${when}: snapshot ${s.name}`)
      // A restore at the sync point may be refused (compaction freed history before it; since
      // format 4 its marker may be freed too, and then an index rebuilt from the log no longer
      // knows the note), but when it is allowed it must give the right image.
      const point = await store.resolvePoint(manifest.restore.at).catch((err: Error) => err)
      if (point instanceof Error) {
        t.match(point.message, /older than|are forgotten/, `${when}: restore --at ${manifest.restore.at} refused: ${point.message}`)
      } else {
        const img = Buffer.alloc(size)
        for await (const { block, data } of store.imageAt(point.seq)) data.copy(img, block * 4096)
        t.equal(sha(img), manifest.restore.sha256, `${when}: restore --at ${manifest.restore.at}`)
      }
      const report = await store.verify()
      t.ok(report.ok, `${when}: verify ${report.problems.join('; ')}`)
    }

    let store = await Store.open(dir, { checkpointIntervalMs: 0 })
    await check(store, 'as written')
    await store.close()

    fs.rmSync(path.join(dir, 'index'), { recursive: true })
    store = await Store.open(dir, { checkpointIntervalMs: 0 })
    t.ok(store.recovery.rebuiltIndex, 'the index was rebuilt from the log')
    await check(store, 'rebuilt')

    const data = crypto.randomBytes(64 * 1024)
    await store.write(900 * 4096, data)
    await store.snapshot({ name: 'after-upgrade' })
    await store.close()
    t.equal(JSON.parse(fs.readFileSync(path.join(dir, 'store.json'), 'utf8')).format, STORE_FORMAT_VERSION, 'the first append made it the current format (older releases refuse it)')
    store = await Store.open(dir, { checkpointIntervalMs: 0, historyKeepMs: 0 })
    t.ok((await store.read(900 * 4096, data.length)).equals(data), 'a write after the upgrade reads back')
    t.equal(sha(await store.readSnapshot('first', 0, size)), manifest.images.first, 'old snapshots still read')
    // Compaction of the old log: markers written before their length was on record (store
    // format 4) are measured from their headers, and freed where no one needs them.
    const expected = await store.read(0, size)
    await store.compact({})
    await store.compact({})
    t.ok((await store.read(0, size)).equals(expected), 'compacted: the image reads the same')
    t.equal(sha(await store.readSnapshot('first', 0, size)), manifest.images.first, 'compacted: old snapshots still read')
    t.ok((await store.verify()).ok, 'compacted: verify is clean')
    await store.close()
    fs.rmSync(path.join(dir, 'index'), { recursive: true })
    store = await Store.open(dir, { checkpointIntervalMs: 0 })
    t.ok((await store.read(0, size)).equals(expected), 'compacted and rebuilt: the image reads the same')
    t.same(store.snapshots().map(s => s.name), [...manifest.snapshots.map((s: { name: string }) => s.name), 'after-upgrade'], 'compacted and rebuilt: the same snapshots')
    t.ok((await store.verify()).ok, 'compacted and rebuilt: verify is clean')
    await store.close()
  })
}

// Compaction with the index as the release wrote it (before store format 5, a trimmed
// version's row names no holder: its own trim entry holds it, looked up by seq) moves the
// trims still needed, and a segment they alone kept goes (format-4 has one).
for (const format of fs.readdirSync(FIXTURES).filter(n => /^format-\d+$/.test(n))) {
  t.test(`${format}: compacts with the index it was written with`, async t => {
    const fixture = path.join(FIXTURES, format)
    const manifest = JSON.parse(fs.readFileSync(path.join(fixture, 'manifest.json'), 'utf8'))
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `logdisk-compat-compact-${format}-`))
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
    fs.cpSync(fixture, dir, { recursive: true })
    const size = manifest.sizeBytes as number
    let store = await Store.open(dir, { checkpointIntervalMs: 0, historyKeepMs: 0 })
    const before = store.status().segments
    await store.compact({ cleanBelow: 0.9 })
    await store.compact({ cleanBelow: 0.9 })
    const after = store.status().segments
    t.equal(sha(await store.read(0, size)), manifest.images.current, 'compacted: current image')
    for (const s of manifest.snapshots) t.equal(sha(await store.readSnapshot(s.name, 0, size)), manifest.images[s.name], `compacted: snapshot ${s.name}`)
    t.ok((await store.verify()).ok, 'compacted: verify is clean')
    // format-4's scattered discards were left alone in a sealed segment (its other inactive
    // segments hold the markers of standing snapshots, which stay).
    if (format === 'format-4') t.ok(after.inactive < before.inactive && after.recycled > before.recycled, `the segment its trims alone kept goes: ${JSON.stringify(before)} -> ${JSON.stringify(after)}`)
    await store.close()
    fs.rmSync(path.join(dir, 'index'), { recursive: true })
    store = await Store.open(dir, { checkpointIntervalMs: 0 })
    t.equal(sha(await store.read(0, size)), manifest.images.current, 'compacted and rebuilt: current image')
    for (const s of manifest.snapshots) t.equal(sha(await store.readSnapshot(s.name, 0, size)), manifest.images[s.name], `compacted and rebuilt: snapshot ${s.name}`)
    t.ok((await store.verify()).ok, 'compacted and rebuilt: verify is clean')
    await store.close()
  })
}
