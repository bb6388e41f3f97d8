import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { logdisk, must, tmpDir } from './helpers/cli'

/**
 * With two copies of every segment (mirror=2), a read that meets a copy whose data fails its
 * checksum is served from the other copy and says: run logdisk verify, then pool repair. pool
 * repair judged copies by their headers only, made no copy, and the store stayed one fault
 * from losing data (found by a hostile test, 2026-12-06). It must replace the damaged copy
 * from the intact one; verify names the damaged copy's volume.
 */
const MIB = 1024 * 1024
const sha = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex')

t.test('pool repair replaces a mirror copy that fails its checksums', { timeout: 180_000 }, async t => {
  const dir = tmpDir('repair-damaged')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const store = path.join(dir, 's')
  const v1 = path.join(dir, 'v1'); const v2 = path.join(dir, 'v2')
  const cli = path.resolve('dist/src/cli/main.js')
  await must(process.execPath, cli, 'create', store, '--size', '64M', '--segment-size', '4M', '--pool', v1, '--pool', v2)
  await must(process.execPath, cli, 'policy', 'set', store, 'mirror=2')
  const data = crypto.randomBytes(12 * MIB)
  {
    const { store: s } = await openStore(store)
    try { await s.write(0, data); await s.flush(); await s.snapshot({ name: 'a' }) } finally { await s.close() }
  }
  await must(process.execPath, cli, 'pool', 'repair', store)
  t.equal((await logdisk('verify', store)).code, 0, 'both copies verify before the damage')

  const rel = fs.readdirSync(v1, { recursive: true }).map(String).find(f => f.endsWith('seg-000000000001.log'))
  t.ok(rel, 'segment 1 has a copy on the first volume')
  const damaged = path.join(v1, rel!)
  const fd = fs.openSync(damaged, 'r+')
  const bytes = Buffer.alloc(64)
  fs.readSync(fd, bytes, 0, 64, 2_000_000)
  for (let i = 0; i < 64; i++) bytes[i] ^= 0xff
  fs.writeSync(fd, bytes, 0, 64, 2_000_000)
  fs.closeSync(fd)

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
  if (restore.code === 0) t.equal(sha(fs.readFileSync(out)), sha(Buffer.concat([data, Buffer.alloc(52 * MIB)])), 'the bytes written')
})
