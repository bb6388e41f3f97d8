// Listing commands take -o (columns), --bytes (exact sizes) and -H (no header, tab-separated),
// like `zfs list -Hp -o`; an unknown column is one line naming the valid ones (issue 12).
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { logdisk, tmpDir } from './helpers/cli'

t.setTimeout(300_000)

t.test('-o, --bytes and -H on snapshots, log, pool list, diff, criteria list and status', async t => {
  const dir = tmpDir('columns')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const store = path.join(dir, 'store')
  const ok = async (...args: string[]): Promise<string> => {
    const r = await logdisk(...args)
    t.equal(r.code, 0, `${args.join(' ')}: exit 0 (${r.stderr.trim()})`)
    return r.stdout
  }
  await ok('create', store, '--size', '16M', '--segment-size', '2M')
  await ok('snapshot', store, '--name', 'a')
  await ok('snapshot', store, '--name', 'b')

  t.equal((await ok('snapshots', store)).split('\n')[0], 'ID\tNAME\tTIME\tSEQ\tCONSISTENCY\tPINS', 'the default columns, with a header')
  t.equal(await ok('snapshots', store, '-o', 'name,id,pins', '-H', '--bytes'), 'a\t1\t0\nb\t2\t0\n', '-o picks and orders, -H drops the header, --bytes is exact')
  t.equal(await ok('snapshots', store, '-o', 'name,pins'), 'NAME\tPINS\na\t0 B\nb\t0 B\n', 'human sizes by default')

  const log = await ok('log', store, '-H', '-o', 'seq,kind')
  t.equal(log, '1\tsnapshot\n2\tsnapshot\n', 'log -H -o')
  t.equal((await ok('log', store)).split('\n')[0], 'SEQ\tTIME\tKIND\tWHAT', 'log has a header')

  const pool = (await ok('pool', 'list', store, '-H', '--bytes', '-o', 'state,used,segments,dir')).trim().split('\t')
  t.same(pool, ['assigned', String(2 * 1024 * 1024), '1', `${path.join(store, 'segments')} (internal)`], 'pool list -H --bytes: one row, exact, no summary line')

  const diff = await ok('diff', store, 'a', 'b', '-H', '-o', 'blocks,bytes', '--bytes')
  t.equal(diff, '', 'diff -H: rows only (none here)')

  fs.mkdirSync(path.join(dir, 'q'))
  await ok('criteria', 'create', store, 'nightly', '--target', path.join(dir, 'q', '{name}.img'))
  t.equal(await ok('criteria', 'list', store, '-H', '-o', 'name,mode,runs'), 'nightly\tfull\t0\n', 'criteria list -H -o')

  t.equal(await ok('status', store, '-H', '--bytes', '-o', 'written,mounted'), 'written\t0 bytes\nmounted\tno\n', 'status -o picks lines; -H is name<TAB>value')
  t.match(await ok('status', store, '-o', 'size'), /^size {6}16\.0 MiB \(block 4\.0 KiB, segment 2\.0 MiB\)\n$/, 'status -o in the padded text form')

  // Unknown columns: one line with the valid ones, exit 1, before anything runs; JSON too.
  const bad = await logdisk('snapshots', store, '-o', 'name,size')
  t.equal(bad.code, 1)
  t.equal(bad.stdout, '')
  t.equal(bad.stderr, 'logdisk: unknown column "size" for snapshots; valid columns: id,name,time,seq,consistency,pins\n')
  const badJson = await logdisk('pool', 'list', store, '-o', 'nope', '--json')
  t.equal(badJson.code, 1)
  t.same(JSON.parse(badJson.stderr), { error: { code: 'BAD_ARGUMENT', message: 'unknown column "nope" for pool list; valid columns: state,capacity,used,segments,dir,id' } })
  for (const args of [['log', store], ['diff', store, 'a', 'b'], ['criteria', 'list', store], ['status', store]]) {
    const r = await logdisk(...args, '-o', 'zzz')
    t.equal(r.code, 1, `${args[0]} -o zzz: exit 1`)
    t.match(r.stderr, /^logdisk: unknown column "zzz" for [a-z ]+; valid columns: [a-z,]+\n$/, `${args[0]}: one line`)
  }
})
