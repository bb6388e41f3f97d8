import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { logdisk } from './helpers/cli'
import { archivedStore } from './helpers/archived-store'

/**
 * verify of a store whose archived segments cannot be fetched (the archive directory gone):
 * each segment it could not read is one problem. It used to add one "indexed but not in the
 * log" line for every block those segments hold (thousands, about an index that was right;
 * found by a hostile test, 2026-12-06); with the archive back, verify is clean.
 */

t.test('verify with the archive out of reach names the segments, not every block', { timeout: 180_000 }, async t => {
  const { dir, store, archive } = await archivedStore('verify-archive-away')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const clean = await logdisk('verify', store, '--json')
  t.equal(clean.code, 0, `verify with the archive: ${clean.stderr}`)

  fs.renameSync(archive, `${archive}.away`)
  fs.rmSync(path.join(store, 'cache'), { recursive: true, force: true })
  const away = await logdisk('verify', store, '--json')
  t.not(away.code, 0, 'verify fails with the archive away')
  const report = JSON.parse(away.stdout) as { problemCount: number, problems: string[] }
  const missing = report.problems.filter(p => /^segment seg-\d+\.log: /.test(p))
  t.ok(missing.length > 0, `it names the segments it could not read (${missing.length}): ${missing[0]}`)
  t.equal(report.problemCount, missing.length, `and nothing else: ${report.problems.filter(p => !missing.includes(p)).slice(0, 3).join(' | ')}`)

  fs.renameSync(`${archive}.away`, archive)
  const back = await logdisk('verify', store)
  t.equal(back.code, 0, `with the archive back, verify is clean: ${back.stdout}${back.stderr}`)
})
