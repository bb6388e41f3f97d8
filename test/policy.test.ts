import { execFile } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { LogdiskError } from '../src/errors'
import { ops } from '../src/ops/ops'
import { POLICY_FILE, POLICY_KEYS, applyAssignments, defaultPolicy, describePolicy, readPolicy, unknownPolicyKeys, volumeIdPolicy, writePolicy, type Policy } from '../src/policy/policy'
import { Store } from '../src/store/store'
import { canMount, cleanup, tmpDir } from './helpers/cli'
import { ROOT } from './helpers/paths'
import { S3RVER_ACCESS_KEY, S3RVER_SECRET_KEY, closedPort, startS3Server } from './helpers/s3-server'

/** Policies: validated data with defaults, in policy.json; the CLI's `policy set` and `show`. */
const CLI = path.join(ROOT, 'dist/src/cli/main.js')
const VALID_KEYS = Object.keys(POLICY_KEYS)
const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

function tmp (t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-policy-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** The LogdiskError a call throws (fails the test when it throws something else or nothing). */
function errorOf (t: Test, fn: () => unknown): LogdiskError | undefined {
  try {
    fn()
  } catch (err) {
    if (err instanceof LogdiskError) return err
    t.fail(`threw a non-LogdiskError: ${String(err)}`)
    return undefined
  }
  t.fail('did not throw')
  return undefined
}

interface Run { code: number, stdout: string, stderr: string }
function logdisk (...args: string[]): Promise<Run> {
  return new Promise(resolve => {
    execFile(process.execPath, [CLI, ...args], { timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException).code === 'number' ? Number((err as NodeJS.ErrnoException).code) : -1) : 0
      resolve({ code, stdout: String(stdout), stderr: String(stderr) })
    })
  })
}

t.test('defaults', async t => {
  t.same(Object.keys(defaultPolicy()), VALID_KEYS, 'a default for every key')
  t.match(defaultPolicy(), { volumeId: 'sequential', 'volumeId.constant': 1, 'volumeId.reuse': true })
  t.equal(typeof defaultPolicy()['volumeId.constant'], 'number')
  t.not(defaultPolicy(), defaultPolicy(), 'a fresh object each time')
  t.same(volumeIdPolicy(defaultPolicy()), { mode: 'sequential', constant: 1, reuse: true }, 'the store\'s default volume id policy')
  const rows = describePolicy(defaultPolicy())
  t.same(rows.map(r => r.key), VALID_KEYS, 'describePolicy lists every key')
  t.ok(rows.every(r => r.value === r.default && r.values.length > 0), 'each with its default as its value and what it takes')
  t.same(rows.filter(r => r.key.startsWith('volumeId')), [
    { key: 'volumeId', value: 'sequential', values: 'sequential|explicit|constant', default: 'sequential' },
    { key: 'volumeId.constant', value: 1, values: 'a positive integer', default: 1 },
    { key: 'volumeId.reuse', value: true, values: 'true|false', default: true }
  ])
  t.same(describePolicy(applyAssignments(defaultPolicy(), ['volumeId.constant=4'])).find(r => r.key === 'volumeId.constant'),
    { key: 'volumeId.constant', value: 4, values: 'a positive integer', default: 1 }, 'the value shown is the policy\'s')
})

t.test('applyAssignments sets typed values and validates', async t => {
  const base = defaultPolicy()
  const next = applyAssignments(base, ['volumeId=constant', 'volumeId.constant=42', 'volumeId.reuse=false'])
  t.same(next, { ...base, volumeId: 'constant', 'volumeId.constant': 42, 'volumeId.reuse': false }, 'numbers and booleans, not strings')
  t.same(base, defaultPolicy(), 'the input policy is not modified')
  // A key twice in one command is refused: which one was meant is not ours to guess (helper-69).
  t.equal(errorOf(t, () => applyAssignments(base, ['volumeId=explicit', 'volumeId=sequential']))?.code, 'BAD_ARGUMENT', 'a key assigned twice is refused')
  t.equal(applyAssignments(base, ['volumeId.reuse=true']).volumeId, 'sequential', 'keys not assigned keep their value')
  t.same(applyAssignments(next, []), next, 'no assignments: no change')

  const unknown = errorOf(t, () => applyAssignments(base, ['bogus=1']))
  t.equal(unknown?.code, 'BAD_ARGUMENT', 'unknown key')
  for (const key of VALID_KEYS) t.match(unknown?.message, key, `the message lists ${key}`)
  t.match(unknown?.message, /bogus/, 'and names the bad key')
  // Names every object has by its prototype are no keys (an internal error: helper-62).
  for (const key of ['__proto__', 'constructor', 'toString', 'hasOwnProperty']) {
    const e = errorOf(t, () => applyAssignments(base, ['history.keep=2h', `${key}=1`]))
    t.equal(e?.code, 'BAD_ARGUMENT', `${key}: an unknown key`)
    t.match(e?.message, `unknown policy key "${key}"`)
  }
  t.equal(errorOf(t, () => applyAssignments(base, ['VolumeId=constant']))?.code, 'BAD_ARGUMENT', 'keys are case-sensitive')
  t.equal(errorOf(t, () => applyAssignments(base, ['=constant']))?.code, 'BAD_ARGUMENT', 'no key')

  const bad: Array<[string, string]> = [
    ['volumeId=bogus', 'sequential|explicit|constant'],
    ['volumeId=', 'sequential|explicit|constant'],
    ['volumeId', 'sequential|explicit|constant'],
    ['volumeId=Constant', 'sequential|explicit|constant'],
    ['volumeId.constant=0', 'a positive integer'],
    ['volumeId.constant=-3', 'a positive integer'],
    ['volumeId.constant=1.5', 'a positive integer'],
    ['volumeId.constant=abc', 'a positive integer'],
    ['volumeId.constant= 4', 'a positive integer'],
    ['volumeId.constant=9007199254740993', 'a positive integer'], // not representable: would be stored as another number
    ['volumeId.reuse=yes', 'true|false'],
    ['volumeId.reuse=1', 'true|false'],
    ['volumeId.reuse=TRUE', 'true|false']
  ]
  for (const [assignment, allowed] of bad) {
    const err = errorOf(t, () => applyAssignments(base, [assignment]))
    t.equal(err?.code, 'BAD_ARGUMENT', `${assignment} is refused`)
    t.ok(err?.message.includes(allowed), `${assignment}: the message names the allowed values (${err?.message})`)
    t.ok(err?.message.includes(assignment.split('=')[0]), `${assignment}: the message names the key`)
  }
})

t.test('applyAssignments is all or nothing', async t => {
  const dir = tmp(t)
  const before = applyAssignments(defaultPolicy(), ['volumeId=explicit'])
  writePolicy(dir, before)
  const file = fs.readFileSync(path.join(dir, POLICY_FILE))
  const policy = readPolicy(dir)
  for (const assignments of [
    ['volumeId=constant', 'volumeId.reuse=maybe'],
    ['volumeId.constant=7', 'nope=1'],
    ['volumeId.reuse=false', 'volumeId.constant=0', 'volumeId=sequential']
  ]) {
    let next: Policy | undefined
    const err = errorOf(t, () => { next = applyAssignments(policy, assignments) })
    t.equal(err?.code, 'BAD_ARGUMENT', `${assignments.join(' ')} is refused`)
    t.equal(next, undefined, 'no partial policy comes back')
    t.same(policy, before, 'the policy passed in is untouched')
  }
  t.ok(fs.readFileSync(path.join(dir, POLICY_FILE)).equals(file), 'policy.json is untouched')
})

t.test('writePolicy / readPolicy', async t => {
  const dir = tmp(t)
  t.same(readPolicy(dir), defaultPolicy(), 'no policy.json: the defaults')
  t.notOk(fs.existsSync(path.join(dir, POLICY_FILE)), 'reading does not create the file')

  const p = applyAssignments(defaultPolicy(), ['volumeId=constant', 'volumeId.constant=5', 'volumeId.reuse=false'])
  writePolicy(dir, p)
  t.same(readPolicy(dir), p, 'round trip')
  t.equal(readPolicy(dir)['volumeId.constant'], 5, 'a number comes back a number')
  t.equal(readPolicy(dir)['volumeId.reuse'], false, 'a boolean comes back a boolean')
  const text = fs.readFileSync(path.join(dir, POLICY_FILE), 'utf8')
  t.same(JSON.parse(text), p, 'policy.json is the policy as JSON')
  t.ok(text.endsWith('}\n'), 'ends with a newline')
  t.same(fs.readdirSync(dir), [POLICY_FILE], 'no temporary file left behind')

  writePolicy(dir, defaultPolicy())
  t.same(readPolicy(dir), defaultPolicy(), 'overwritten')

  // A policy.json from an older logdisk (fewer keys) gets the defaults for the rest.
  fs.writeFileSync(path.join(dir, POLICY_FILE), JSON.stringify({ volumeId: 'explicit' }))
  t.same(readPolicy(dir), { ...defaultPolicy(), volumeId: 'explicit' }, 'missing keys take their defaults')

  // A key no policy has (a typo in a hand edit) is left out, and named, not carried along.
  fs.writeFileSync(path.join(dir, POLICY_FILE), JSON.stringify({ volumeId: 'explicit', 'snapshot.evry': '1h' }))
  t.same(readPolicy(dir), { ...defaultPolicy(), volumeId: 'explicit' }, 'an unknown key is not part of the policy')
  t.same(unknownPolicyKeys(dir), ['snapshot.evry'], 'unknownPolicyKeys names it')
  writePolicy(dir, readPolicy(dir))
  t.same(unknownPolicyKeys(dir), [], 'writing the policy back drops it')

  fs.writeFileSync(path.join(dir, POLICY_FILE), '{ not json')
  t.equal(errorOf(t, () => readPolicy(dir))?.code, 'BAD_CONFIG', 'invalid JSON')

  // Hand-edited values are validated like assignments, not handed to the store as they are.
  for (const stored of [{ volumeId: 'bogus' }, { 'volumeId.constant': 0 }, { 'volumeId.constant': '5' }, { 'volumeId.reuse': 'yes' }, [1], 'sequential', null]) {
    fs.writeFileSync(path.join(dir, POLICY_FILE), JSON.stringify(stored))
    const err = errorOf(t, () => readPolicy(dir))
    t.equal(err?.code, 'BAD_CONFIG', `policy.json holding ${JSON.stringify(stored)}`)
  }
})

t.test('volumeIdPolicy maps the policy to what the store takes', async t => {
  t.same(volumeIdPolicy(applyAssignments(defaultPolicy(), ['volumeId=constant', 'volumeId.constant=8', 'volumeId.reuse=false'])),
    { mode: 'constant', constant: 8, reuse: false })
  t.same(volumeIdPolicy(applyAssignments(defaultPolicy(), ['volumeId=explicit'])), { mode: 'explicit', constant: 1, reuse: true })

  // End to end: the snapshot op reads policy.json of the store.
  const dir = path.join(tmp(t), 'store')
  await Store.create(dir, { sizeBytes: 1024 * 1024 })
  const store = await Store.open(dir, { checkpointIntervalMs: 0 })
  t.teardown(() => store.close())
  const snap = async (args: Record<string, unknown>): Promise<number | null> => ((await ops.snapshot(store, args, {})) as { id: number | null }).id
  t.equal(await snap({ name: 'a' }), 1, 'no policy.json: sequential')
  writePolicy(dir, applyAssignments(defaultPolicy(), ['volumeId=constant', 'volumeId.constant=6']))
  t.equal(await snap({ name: 'b' }), 6, 'constant from policy.json')
  t.equal(await snap({ name: 'c' }), 6)
  t.same(store.snapshots().map(s => s.id), [1, null, 6], 'the constant id moved to the newest')
  writePolicy(dir, applyAssignments(defaultPolicy(), ['volumeId=explicit']))
  let code: string | undefined
  try { await snap({ name: 'd' }) } catch (err) { code = (err as LogdiskError).code }
  t.equal(code, 'BAD_ARGUMENT', 'explicit without an id')
  t.equal(await snap({ name: 'd', id: '12' }), 12, 'explicit with an id (the CLI passes it through)')
  fs.writeFileSync(path.join(dir, POLICY_FILE), JSON.stringify({ volumeId: 'Constant' }))
  code = undefined
  try { await snap({ name: 'e' }) } catch (err) { code = err instanceof LogdiskError ? err.code : `not a LogdiskError: ${String(err)}` }
  t.equal(code, 'BAD_CONFIG', 'a hand-edited bad policy is a BAD_CONFIG error, not a crash')
  t.same(store.snapshots().map(s => s.name), ['a', 'b', 'c', 'd'], 'and no snapshot was taken')
})

/** Builds dist/ when the compiled CLI is missing or older than the sources it runs. */
function cliIsStale (): string | false {
  if (!fs.existsSync(CLI)) return 'missing'
  const sources = ['src/cli/main.ts', 'src/cli/commands/policy.ts', 'src/cli/commands/snapshot.ts', 'src/ops/ops.ts', 'src/policy/policy.ts', 'src/errors.ts']
  const stale = sources.find(s => fs.statSync(path.join(ROOT, s)).mtimeMs > fs.statSync(path.join(ROOT, 'dist', s.replace(/\.ts$/, '.js'))).mtimeMs)
  return stale ? `older than ${stale}` : false
}

t.test('the CLI: policy set and show', async t => {
  const stale = cliIsStale()
  if (stale) {
    t.comment(`dist is ${stale}: building with tsc -p .`)
    await new Promise<void>(resolve => execFile('npx', ['tsc', '-p', '.'], { cwd: ROOT, timeout: 180_000 }, () => resolve()))
  }
  t.equal(cliIsStale(), false, 'the compiled CLI is there and current')

  const dir = tmp(t)
  const store = path.join(dir, 'store')
  await Store.create(store, { sizeBytes: 1024 * 1024 })
  const file = path.join(store, POLICY_FILE)
  const oneLine = (r: Run, what: string, re: RegExp): void => {
    t.not(r.code, 0, `${what}: exits non-zero`)
    t.equal(r.code, 1, `${what}: exit code 1 (a user error, not an internal one)`)
    t.match(r.stderr, /^logdisk: [^\n]+\n$/, `${what}: one line on stderr starting "logdisk: " (${JSON.stringify(r.stderr)})`)
    t.match(r.stderr, re, `${what}: says what is wrong`)
    t.equal(r.stdout, '', `${what}: nothing on stdout`)
  }

  oneLine(await logdisk('policy', 'set', store, 'volumeId=bogus'), 'a bad value', /volumeId takes sequential\|explicit\|constant/)
  t.notOk(fs.existsSync(file), 'no policy.json written')
  oneLine(await logdisk('policy', 'set', store, 'nope=1'), 'an unknown key', new RegExp(`valid keys: ${escape(VALID_KEYS.join(', '))}`))
  oneLine(await logdisk('policy', 'set', store, 'volumeId=constant', 'volumeId.reuse=maybe'), 'one bad of two', /volumeId\.reuse takes true\|false/)
  t.notOk(fs.existsSync(file), 'all or nothing: the good assignment was not written either')

  const ok = await logdisk('policy', 'set', store, 'volumeId=constant', 'volumeId.constant=3')
  t.equal(ok.code, 0, `policy set succeeds (${ok.stderr})`)
  t.equal(ok.stdout, 'set volumeId=constant\nset volumeId.constant=3\n')
  t.same(readPolicy(store), { ...defaultPolicy(), volumeId: 'constant', 'volumeId.constant': 3 }, 'policy.json has it')
  const written = fs.readFileSync(file)
  oneLine(await logdisk('policy', 'set', store, 'volumeId.constant=0'), 'a bad value on an existing policy', /a positive integer/)
  t.ok(fs.readFileSync(file).equals(written), 'policy.json unchanged')

  const show = await logdisk('policy', 'show', store, '--json')
  t.equal(show.code, 0)
  t.same(JSON.parse(show.stdout), readPolicy(store), 'policy show --json prints the stored policy')
  const text = await logdisk('policy', 'show', store)
  t.equal(text.code, 0)
  t.match(text.stdout, /^volumeId=constant\t\(sequential\|explicit\|constant; default sequential\)$/m)
  t.match(text.stdout, /^volumeId\.constant=3\t/m)

  oneLine(await logdisk('policy', 'set', path.join(dir, 'not-a-store'), 'volumeId=constant'), 'not a store', /no store at/)
  oneLine(await logdisk('policy', 'set', store, 'mirror'), 'a key without a value', /^logdisk: policy set takes KEY=VALUE \(got "mirror"; mirror takes 1\|2\)\n$/)
  oneLine(await logdisk('policy', 'set', store, '=3'), 'a value without a key', /^logdisk: policy set takes KEY=VALUE \(got "=3"\)\n$/)
  oneLine(await logdisk('policy', 'set', store, 'mirror=1', 'mirror=2'), 'a key set twice', /^logdisk: policy mirror is set twice in one command; give it once\n$/)

  // mirror=2 with one volume: every write needing a new segment would fail with ENOSPC.
  oneLine(await logdisk('policy', 'set', store, 'mirror=2'), 'mirror=2 on one volume', new RegExp(`^logdisk: mirror=2 needs 2 pool volumes that take segments, and ${escape(store)} has 1: every write that needs a new segment would fail with ENOSPC; add a volume first \\(logdisk pool add ${escape(store)} DIR\\); nothing was changed\n$`))
  t.equal(readPolicy(store).mirror, 1, 'mirror stays 1')
  t.equal((await logdisk('pool', 'add', store, path.join(dir, 'second'))).code, 0)

  // The value as stored is what set prints (helper-64: `mirror=02` echoed "02").
  const padded = await logdisk('policy', 'set', store, 'mirror=02')
  t.equal(padded.code, 0, `mirror=02 is taken (${padded.stderr})`)
  t.equal(padded.stdout, 'set mirror=2\n', 'set prints the stored value')
  t.equal(readPolicy(store).mirror, 2)

  // A key no policy has: show warns about it, set removes it and says so.
  fs.writeFileSync(file, JSON.stringify({ ...readPolicy(store), 'snapshot.evry': '1h' }))
  const warned = await logdisk('policy', 'show', store)
  t.equal(warned.code, 0)
  t.match(warned.stderr, /^logdisk: warning: policy\.json has a key no policy has, ignored: "snapshot\.evry"/, 'show warns about the unknown key')
  t.notMatch(warned.stdout, /evry/, 'and does not list it')
  const removed = await logdisk('policy', 'set', store, 'snapshot.every=1h')
  t.equal(removed.code, 0, removed.stderr)
  t.match(removed.stderr, /removed a key no policy has from policy\.json: "snapshot\.evry"/, 'set says it removed it')
  t.notOk(Object.hasOwn(JSON.parse(fs.readFileSync(file, 'utf8')), 'snapshot.evry'), 'policy.json no longer has it')
  t.equal(readPolicy(store)['snapshot.every'], '1h', 'the assignment was made')

  fs.writeFileSync(file, JSON.stringify({ volumeId: 'bogus' }))
  oneLine(await logdisk('snapshot', store, '--name', 'x'), 'snapshot with a hand-edited bad policy.json', /policy\.json/)
  oneLine(await logdisk('policy', 'show', store), 'policy show of a bad policy.json', /policy\.json/)
})

t.test('policy set checks archive and replica targets before it writes anything', async t => {
  const dir = tmp(t)
  const store = path.join(dir, 'store')
  await Store.create(store, { sizeBytes: 1024 * 1024 })
  const file = path.join(store, POLICY_FILE)
  const refused = (r: Run, what: string, code: string, re: RegExp): void => {
    t.equal(r.code, 1, `${what}: exit 1`)
    t.equal(r.stdout, '', `${what}: nothing on stdout`)
    const e = JSON.parse(r.stderr).error
    t.equal(e.code, code, `${what}: ${code}`)
    t.match(e.message, re, `${what}: says why (${e.message})`)
    t.notOk(fs.existsSync(file), `${what}: no policy.json written`)
  }
  const missing = path.join(dir, 'missing')
  refused(await logdisk('policy', 'set', store, `archive.target=${missing}`, 'snapshot.keep=3', '--json'), 'a missing directory', 'BAD_ARGUMENT',
    new RegExp(`^archive\\.target=${escape(missing)}: ${escape(missing)} does not exist: create it first \\(mkdir -p ${escape(missing)}\\); nothing was changed$`))
  fs.writeFileSync(path.join(dir, 'plain'), '')
  refused(await logdisk('policy', 'set', store, `replicate.target=file://${path.join(dir, 'plain')}`, '--json'), 'a file', 'BAD_ARGUMENT', /is not a directory; nothing was changed$/)
  const locked = path.join(dir, 'immutable')
  fs.mkdirSync(locked)
  const chattr = await runWith('chattr', ['+i', locked])
  if (chattr.code === 0) {
    try {
      refused(await logdisk('policy', 'set', store, `archive.target=${locked}`, '--json'), 'a directory this user cannot write', 'READ_ONLY', /is not writable by this user \(EPERM\); nothing was changed$/)
    } finally {
      await runWith('chattr', ['-i', locked]) // else the temporary directory cannot be removed
    }
  } else t.comment(`chattr +i refused here (${chattr.stderr.trim()}): the not-writable case is not checked`)

  const s3 = await startS3Server('policy-bucket')
  let s3Running = true
  t.teardown(async () => { if (s3Running) await s3.stop() })
  const env = { AWS_ENDPOINT_URL: s3.endpoint, AWS_ACCESS_KEY_ID: S3RVER_ACCESS_KEY, AWS_SECRET_ACCESS_KEY: S3RVER_SECRET_KEY, AWS_REGION: 'us-east-1' }
  refused(await logdiskEnv(env, 'policy', 'set', store, 'archive.target=s3://no-such-bucket/p', '--json'), 'a bucket that does not exist', 'IO', /bucket no-such-bucket does not exist.*; nothing was changed$/)
  refused(await logdiskEnv({ ...env, AWS_ENDPOINT_URL: `http://127.0.0.1:${await closedPort()}` }, 'policy', 'set', store, 'replicate.target=s3://policy-bucket/p', '--json'),
    'an endpoint nobody answers at', 'IO', /endpoint unreachable \(ECONNREFUSED\).*; nothing was changed$/)

  const good = await logdiskEnv(env, 'policy', 'set', store, 'archive.target=s3://policy-bucket/a', `replicate.target=${dir}`, '--json')
  t.equal(good.code, 0, `a bucket that answers and a writable directory are taken (${good.stderr})`)
  t.same(JSON.parse(good.stdout).set, { 'archive.target': 's3://policy-bucket/a', 'replicate.target': dir })
  t.equal(JSON.parse(good.stdout).applied, null, 'not mounted: nothing applied it yet (the next mount reads it)')
  t.same(fs.readdirSync(dir).filter(f => f.startsWith('.logdisk-probe')), [], 'the write probe is removed')
  // Unchanged targets are not checked again: the bucket going away does not block other keys.
  await s3.stop()
  s3Running = false
  const other = await logdiskEnv(env, 'policy', 'set', store, 'snapshot.keep=2')
  t.equal(other.code, 0, `an unrelated key is set while the bucket is unreachable (${other.stderr})`)
})

t.test('a mounted daemon applies policy set before the command returns', { skip: canMount() }, async t => {
  const dir = tmpDir('policy-mounted')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(mnt)
  t.equal((await logdisk('create', store, '--size', '16M', '--segment-size', '2M')).code, 0)
  // An hour between policy ticks: only the acknowledgement of policy set can apply the change.
  const mount = await runWith(process.execPath, [CLI, 'mount', store, mnt], { LOGDISK_MAINTENANCE_TICK_MS: '3600000' })
  t.equal(mount.code, 0, `mounted (${mount.stderr})`)
  const keepMs = async (): Promise<number | null> => JSON.parse((await logdisk('status', store, '--json')).stdout).history.keepMs
  t.equal(await keepMs(), 86_400_000, 'history.keep is 24h by default')
  const set = await logdisk('policy', 'set', store, 'history.keep=2h', '--json')
  t.equal(set.code, 0, `policy set (${set.stderr})`)
  const pid = JSON.parse(fs.readFileSync(path.join(store, 'daemon.json'), 'utf8')).pid
  t.same(JSON.parse(set.stdout).applied, { pid }, 'the daemon acknowledged it')
  t.equal(await keepMs(), 7_200_000, 'in force at once, with no tick in between')
  const text = await logdisk('policy', 'set', store, 'history.keep=3h')
  t.equal(text.stdout, `set history.keep=3h\napplied by the mount daemon (pid ${pid})\n`)

  // An archive target set on the mounted store is usable by the next command.
  const arch = path.join(dir, 'arch')
  fs.mkdirSync(arch)
  t.equal((await logdisk('policy', 'set', store, `archive.target=${arch}`)).code, 0)
  const archived = await logdisk('archive', store, '--json')
  t.equal(archived.code, 0, `archive runs against the new target at once (${archived.stderr})`)
})

function runWith (cmd: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise(resolve => {
    execFile(cmd, args, { timeout: 120_000, env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException).code === 'number' ? Number((err as NodeJS.ErrnoException).code) : -1) : 0
      resolve({ code, stdout: String(stdout), stderr: String(stderr) })
    })
  })
}

function logdiskEnv (env: Record<string, string>, ...args: string[]): Promise<Run> {
  return runWith(process.execPath, [CLI, ...args], env)
}
