// CLI start-up (issue 12 item 6): loading the CLI, and running a command on an unmounted
// store, must not load what only the mount daemon, adopt or a terminal's progress bar need
// (pino, prom-client, fuse-native, cli-progress, the policy engine): each cost every command
// tens of milliseconds before it did any work.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { CLI, tmpDir } from './helpers/cli'

const HEAVY = ['node_modules/pino/', 'node_modules/prom-client/', 'node_modules/fuse-native/', 'node_modules/cli-progress/', 'src/policy/engine.js', 'src/daemon/daemon.js', 'src/ops/adopt.js']

/** The modules a CLI run loaded (a preload script lists require.cache at exit). */
function loaded (root: string, args: string[]): { status: number | null, modules: string[] } {
  const hook = path.join(root, 'list-modules.cjs')
  const out = path.join(root, 'modules.json')
  fs.writeFileSync(hook, `process.on('exit', () => require('fs').writeFileSync(${JSON.stringify(out)}, JSON.stringify(Object.keys(require.cache))))\n`)
  const r = spawnSync(process.execPath, ['-r', hook, CLI, ...args], { encoding: 'utf8' })
  return { status: r.status, modules: JSON.parse(fs.readFileSync(out, 'utf8')) }
}

t.test('the CLI loads no daemon, metrics, FUSE or progress-bar module for --version, status, snapshot and send', async t => {
  const root = tmpDir('cli-startup')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const store = path.join(root, 'store')
  t.equal(spawnSync(process.execPath, [CLI, 'create', store, '--size', '16M']).status, 0, 'created')
  for (const args of [['--version'], ['status', store], ['snapshot', store, '--name', 'a'], ['send', store, 'a', '--out', path.join(root, 'a.stream')]]) {
    const { status, modules } = loaded(root, args)
    t.equal(status, 0, `${args[0]} ran`)
    t.same(HEAVY.filter(h => modules.some(m => m.replaceAll(path.sep, '/').includes(h))), [], `${args[0]} loaded none of them`)
  }
})
