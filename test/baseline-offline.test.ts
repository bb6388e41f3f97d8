import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { logdisk, must, tmpDir } from './helpers/cli'

/**
 * Commands that never write to a store (verify, restore, export, send) open an unmounted store
 * read-only. After `compact --into-baseline` some blocks live only in the baseline image, and
 * the reader opened it as a writer would (mkdir of baseline/, open with create), which a
 * read-only open refuses: every one of those commands failed with "mkdir .../baseline: the
 * store is open read-only" (found by a hostile test, 2026-12-06). Each must read the baseline
 * and give the bytes written.
 */
const MIB = 1024 * 1024

t.test('read-only commands on an unmounted store read its baseline', { timeout: 180_000 }, async t => {
  const dir = tmpDir('baseline-offline')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const store = path.join(dir, 's')
  await must(process.execPath, path.resolve('dist/src/cli/main.js'), 'create', store, '--size', '16M', '--segment-size', '2M')

  // 8 MiB of random data, merged into the baseline; then a snapshot over it.
  const data = crypto.randomBytes(8 * MIB)
  {
    const { store: s } = await openStore(store)
    try {
      await s.write(0, data)
      await s.flush()
      const merged = await s.compactIntoBaseline()
      t.ok(merged.blocks > 0, `merged ${merged.blocks} blocks into the baseline`)
      await s.snapshot({ name: 'a' })
    } finally {
      await s.close()
    }
  }
  t.ok(fs.existsSync(path.join(store, 'baseline')), 'the store has a baseline')
  const expected = Buffer.concat([data, Buffer.alloc(8 * MIB)])
  const sha = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex')

  const verify = await logdisk('verify', store)
  t.equal(verify.code, 0, `verify: ${verify.stderr}${verify.stdout}`)

  const restored = path.join(dir, 'r.img')
  const restore = await logdisk('restore', store, '--at', 'a', '--out', restored)
  t.equal(restore.code, 0, `restore: ${restore.stderr}`)
  if (restore.code === 0) t.equal(sha(fs.readFileSync(restored)), sha(expected), 'restore gives the bytes written')

  const exported = path.join(dir, 'e.img')
  const exp = await logdisk('export', store, 'a', '--out', exported)
  t.equal(exp.code, 0, `export: ${exp.stderr}`)
  if (exp.code === 0) t.equal(sha(fs.readFileSync(exported)), sha(expected), 'export gives the bytes written')

  const stream = path.join(dir, 'a.stream')
  const send = await logdisk('send', store, 'a', '--out', stream)
  t.equal(send.code, 0, `send: ${send.stderr}`)
  const copy = path.join(dir, 'c')
  if (send.code === 0) {
    const receive = await logdisk('receive', copy, '--in', stream)
    t.equal(receive.code, 0, `receive: ${receive.stderr}`)
    const copied = path.join(dir, 'c.img')
    const exp2 = await logdisk('export', copy, 'a', '--out', copied)
    t.equal(exp2.code, 0, `export of the received copy: ${exp2.stderr}`)
    if (exp2.code === 0) t.equal(sha(fs.readFileSync(copied)), sha(expected), 'the stream received elsewhere gives the bytes written')
  }
  t.notOk(fs.readdirSync(store).some(f => f.startsWith('.tmp')), 'nothing was left in the store')
})
