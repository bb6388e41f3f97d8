// The index checkpoint is committed only after the log it covers was synced, so an index that
// names more log than the segment files hold means flushed writes are missing: a pool volume
// emptied or replaced by an empty directory (its `<volume>/<uuid>` made again), segment files
// deleted or cut short. The open took it for an index "ahead of the log" and rebuilt the index
// from what was left: the old index was cleared, the lost blocks read as zeros, the new log
// reused the lost segments' ids, and nothing but a log line said so (a hostile test,
// helper-75). Now the open refuses in one line and changes nothing; the files brought back,
// the store opens with every byte; the index moved aside, the user gives the loss up.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { LogdiskError } from '../src/errors'
import { Store } from '../src/store'
import { tmpDir } from './helpers/cli'

const MiB = 1024 * 1024

async function written (t: { teardown: (fn: () => void) => void }, name: string): Promise<{ dir: string, data: Buffer, files: string[] }> {
  const root = tmpDir(name)
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const dir = path.join(root, 's')
  await Store.create(dir, { sizeBytes: 32 * MiB, segmentBytes: 2 * MiB })
  const data = crypto.randomBytes(12 * MiB)
  const { store } = await openStore(dir)
  await store.write(0, data)
  await store.flush()
  await store.close()
  const segments = path.join(dir, 'segments')
  const files = fs.readdirSync(segments).filter(f => f.startsWith('seg-')).sort().map(f => path.join(segments, f))
  return { dir, data, files }
}

async function refusal (dir: string): Promise<LogdiskError | undefined> {
  try {
    const { store } = await openStore(dir)
    await store.close()
    return undefined
  } catch (err) {
    return err as LogdiskError
  }
}

t.test('the newest segment files gone: refused, nothing changed; brought back, every byte reads', { timeout: 120_000 }, async t => {
  const { dir, data, files } = await written(t, 'missing-segments')
  t.ok(files.length >= 6, `${files.length} segment files`)
  const aside = path.join(path.dirname(dir), 'aside')
  fs.mkdirSync(aside)
  const newest = files.slice(-3)
  for (const f of newest) fs.renameSync(f, path.join(aside, path.basename(f)))
  const err = await refusal(dir)
  t.equal(err?.code, 'CORRUPT', `refused: ${err?.message}`)
  t.match(err?.message, /the index says the log reaches offset \d+ of segment \d+, but no pool volume holds a copy of it: flushed writes are missing .*bring them back and open again \(nothing was changed\), or, to give them up .* move \S+index aside/)
  t.equal(await refusal(dir).then(e => e?.code), 'CORRUPT', 'and again on the next open')
  for (const f of newest) fs.renameSync(path.join(aside, path.basename(f)), f)
  const { store } = await openStore(dir)
  try {
    t.ok((await store.read(0, data.length)).equals(data), 'the files brought back, every byte reads')
    t.ok((await store.verify()).ok, 'and verifies')
  } finally {
    await store.close()
  }
})

t.test('the newest segment cut short: refused; the index moved aside, the store opens with what is left', { timeout: 120_000 }, async t => {
  const { dir, data, files } = await written(t, 'short-segment')
  const newest = files.at(-1)!
  const full = fs.readFileSync(newest)
  fs.truncateSync(newest, 4096) // its header only
  const err = await refusal(dir)
  t.equal(err?.code, 'CORRUPT', `refused: ${err?.message}`)
  t.match(err?.message, /but its copy on \S+ ends before that/)
  fs.writeFileSync(newest, full)
  t.equal(await refusal(dir), undefined, 'whole again, it opens')
  fs.truncateSync(newest, 4096)
  fs.renameSync(path.join(dir, 'index'), path.join(path.dirname(dir), 'index.aside'))
  const { store } = await openStore(dir)
  try {
    t.ok(store.recovery.rebuiltIndex, 'with the index moved aside, it is rebuilt from the log that is left')
    t.ok((await store.read(0, MiB)).equals(data.subarray(0, MiB)), 'the older blocks read')
  } finally {
    await store.close()
  }
})
