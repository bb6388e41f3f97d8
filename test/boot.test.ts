// Mount at boot: `make install` (scripts/install.sh) puts logdisk in /usr/local/bin, where
// mount(8) finds it through mount.fuse (helpers run with no PATH); a real fstab line is mounted
// with `mount -T` and unmounted with `umount`; the systemd unit template passes
// `systemd-analyze verify`, and its ExecStart/ExecStop commands are run as systemd would, with
// NOTIFY_SOCKET on a socket this test listens on: READY=1 must come only once current.img reads.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { canMount, cleanup, isMounted, logdisk, must, run, tmpDir } from './helpers/cli'

t.setTimeout(600_000)
const skip = canMount() || (fs.existsSync('/sbin/mount.fuse') || fs.existsSync('/usr/sbin/mount.fuse') ? false : 'needs mount.fuse (Debian package fuse)')
const BIN = '/usr/local/bin/logdisk'

/** Installs logdisk into /usr/local/bin (as make install does) for the test; puts back what was there. */
async function install (t: Test, unitDir: string): Promise<void> {
  const before = fs.existsSync(BIN) ? fs.readFileSync(BIN) : undefined
  t.teardown(() => {
    if (before) fs.writeFileSync(BIN, before, { mode: 0o755 })
    else fs.rmSync(BIN, { force: true })
  })
  const r = await run('bash', ['scripts/install.sh'], { env: { PREFIX: '/usr/local', UNITDIR: unitDir, DESTDIR: '' } })
  if (r.code !== 0) throw new Error(`install failed: ${r.stderr}${r.stdout}`)
}

async function waitFor (what: string, cond: () => boolean, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

function pidGone (pid: number): boolean {
  try {
    process.kill(pid, 0)
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.split(') ')[1]?.startsWith('Z') ?? true
  } catch { return true }
}

t.test('fstab: mount -T <fstab> <mountpoint> mounts through mount.fuse with options; umount stops the daemon', { skip }, async t => {
  const dir = tmpDir('fstab')
  t.teardown(() => cleanup(dir, t))
  await install(t, path.join(dir, 'units'))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(mnt)
  t.equal((await logdisk('create', store, '--size', '64M')).code, 0)

  const fstab = path.join(dir, 'fstab')
  fs.writeFileSync(fstab, `# a test fstab\n${store} ${mnt} fuse.logdisk rw,nofail,_netdev,allow_other,dev,suid,x-systemd.requires=network-online.target 0 0\n`)
  const m = await run('mount', ['-T', fstab, mnt], { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } })
  t.equal(m.code, 0, `mount -T: ${m.stderr}${m.stdout}`)
  const line = fs.readFileSync('/proc/mounts', 'utf8').split('\n').find(l => l.split(' ')[1] === mnt) ?? ''
  t.match(line, new RegExp(`^logdisk:${store} ${mnt} fuse\\.logdisk rw,`), '/proc/mounts shows the logdisk mount, read-write')
  t.match(line, /allow_other/, 'allow_other reached the kernel')
  const pid = JSON.parse(fs.readFileSync(path.join(store, 'daemon.json'), 'utf8')).pid as number

  const data = Buffer.alloc(1 << 20)
  for (let i = 0; i < data.length; i += 4) data.writeUInt32LE(i * 2654435761 >>> 0, i)
  const fd = fs.openSync(path.join(mnt, 'current.img'), 'r+')
  fs.writeSync(fd, data, 0, data.length, 4 << 20)
  fs.fsyncSync(fd)
  fs.closeSync(fd)

  const u = await run('umount', [mnt])
  t.equal(u.code, 0, `umount: ${u.stderr}`)
  await waitFor('the daemon to exit after umount', () => pidGone(pid))
  t.notOk(isMounted(mnt), 'unmounted')
  t.notOk(fs.existsSync(path.join(store, 'daemon.json')), 'the daemon cleaned up after itself')

  // mount -t fuse.logdisk -o ro: the same helper form, read-only.
  const ro = await run('mount', ['-t', 'fuse.logdisk', '-o', 'ro,noatime', store, mnt], { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } })
  t.equal(ro.code, 0, `mount -t fuse.logdisk -o ro: ${ro.stderr}`)
  const back = Buffer.alloc(data.length)
  const rfd = fs.openSync(path.join(mnt, 'current.img'), 'r')
  fs.readSync(rfd, back, 0, back.length, 4 << 20)
  fs.closeSync(rfd)
  t.ok(back.equals(data), 'what was written through the fstab mount reads back')
  t.throws(() => fs.openSync(path.join(mnt, 'current.img'), 'r+'), { code: 'EROFS' }, 'ro: current.img does not open for writing')
  t.match(fs.readFileSync('/proc/mounts', 'utf8'), new RegExp(`${mnt} fuse\\.logdisk ro,`), 'the mount is ro for the kernel too')
  const pid2 = JSON.parse(fs.readFileSync(path.join(store, 'daemon.json'), 'utf8')).pid as number
  t.equal((await run('umount', [mnt])).code, 0)
  await waitFor('the daemon to exit', () => pidGone(pid2))

  const bad = await run('mount', ['-t', 'fuse.logdisk', '-o', 'bogus_option', store, mnt], { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } })
  t.not(bad.code, 0, 'an unknown option fails the mount')
  t.match(bad.stderr, /unknown mount option "bogus_option"/, 'and says which')
  t.notOk(isMounted(mnt))
  t.equal((await logdisk('verify', store)).code, 0, 'verify is clean')
})

/** A unix datagram socket that prints each message, and on READY=1 reads current.img at once. */
const LISTENER = `
import json, os, socket, sys
path, image = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
print(json.dumps({"listening": True}), flush=True)
while True:
    data = s.recv(65536).decode()
    fields = dict(l.split("=", 1) for l in data.split("\\n") if "=" in l)
    out = {"fields": fields}
    if fields.get("READY") == "1":
        try:
            with open(image, "rb") as f:
                out["readBytes"] = len(f.read(4096))
        except OSError as e:
            out["readError"] = str(e)
    print(json.dumps(out), flush=True)
`

t.test('logdisk@.service: systemd-analyze verify; ExecStart tells READY=1 only once current.img reads; ExecStop stops it', { skip }, async t => {
  const dir = tmpDir('unit')
  t.teardown(() => cleanup(dir, t))
  const units = path.join(dir, 'units')
  await install(t, units)
  const unitText = fs.readFileSync(path.join(units, 'logdisk@.service'), 'utf8')
  t.same(unitText, fs.readFileSync('examples/logdisk@.service', 'utf8'), 'the installed unit is examples/logdisk@.service')
  t.match(unitText, /^Type=notify$/m)

  const analyze = await run('systemd-analyze', ['--version'])
  if (analyze.code === 0) {
    const store0 = '/srv/disk'
    const instance = (await must('systemd-escape', '--path', store0)).trim()
    const copy = path.join(dir, `logdisk@${instance}.service`)
    fs.copyFileSync(path.join(units, 'logdisk@.service'), copy)
    const v = await run('systemd-analyze', ['verify', copy], { timeoutMs: 60_000 })
    t.equal(v.code, 0, `systemd-analyze verify: ${v.stderr}`)
    t.equal(v.stderr.trim(), '', 'no warnings')
  } else t.comment('systemd-analyze is not installed: skipping verify')

  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  t.equal((await logdisk('create', store, '--size', '32M')).code, 0)
  const instance = (await must('systemd-escape', '--path', store)).trim()
  // What systemd would run: specifiers and environment substituted, as in the unit.
  const expand = (line: string, env: Record<string, string>): string[] => line
    .replace(/%f/g, store).replace(/%i/g, instance)
    .replace(/\$\{(\w+)\}/g, (_, k) => env[k] ?? '')
    .split(/\s+/).flatMap(w => /^\$(\w+)$/.test(w) ? (env[w.slice(1)] ?? '').split(/\s+/) : [w]).filter(Boolean)
  const env = { MOUNTPOINT: mnt, OPTIONS: '-o allow_other' }
  const execStart = expand(/^ExecStart=(.*)$/m.exec(unitText)![1], env)
  const execStop = expand(/^ExecStop=-?(.*)$/m.exec(unitText)![1], env)
  t.same(execStart.slice(1), ['mount', store, mnt, '--foreground', '-o', 'allow_other'])

  const sock = path.join(dir, 'notify.sock')
  const listener = spawn('python3', ['-c', LISTENER, sock, path.join(mnt, 'current.img')], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { listener.kill() })
  const messages: Array<{ fields?: Record<string, string>, readBytes?: number, readError?: string, listening?: boolean }> = []
  let buf = ''
  listener.stdout!.on('data', d => {
    buf += d
    let nl
    while ((nl = buf.indexOf('\n')) >= 0) { messages.push(JSON.parse(buf.slice(0, nl))); buf = buf.slice(nl + 1) }
  })
  await waitFor('the notify listener', () => messages.some(m => m.listening))

  const daemon = spawn(execStart[0], execStart.slice(1), { env: { ...process.env, NOTIFY_SOCKET: sock }, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  daemon.stdout!.on('data', d => { out += d })
  daemon.stderr!.on('data', d => { out += d })
  const exited = new Promise<number | null>(resolve => daemon.on('exit', code => resolve(code)))
  t.teardown(() => { if (daemon.exitCode === null) daemon.kill('SIGKILL') })
  await waitFor('READY=1', () => messages.some(m => m.fields?.READY === '1') || daemon.exitCode !== null, 60_000)
  const ready = messages.find(m => m.fields?.READY === '1')
  t.ok(ready, `READY=1 arrived (daemon output: ${out.slice(-400)})`)
  t.equal(ready?.readBytes, 4096, `current.img was readable the moment READY=1 arrived${ready?.readError ? `: ${ready.readError}` : ''}`)
  t.equal(ready?.fields?.MAINPID, String(daemon.pid), 'MAINPID is the process systemd started (the wrapper execs Node)')
  t.match(ready?.fields?.STATUS ?? '', /^serving /, 'a STATUS line for systemctl status')
  t.match(out, /"msg":"mounted"/, 'the daemon logs JSON lines to stdout (the journal)')
  t.match(fs.readFileSync('/proc/mounts', 'utf8'), new RegExp(`${mnt} fuse\\.logdisk .*allow_other`), 'OPTIONS from the environment file reach the mount')

  const stop = await run(execStop[0], execStop.slice(1))
  t.equal(stop.code, 0, `ExecStop: ${stop.stderr}`)
  const code = await Promise.race([exited, new Promise<'hung'>(resolve => setTimeout(() => resolve('hung'), 60_000).unref())])
  t.equal(code, 0, 'the service process exits 0 after ExecStop')
  t.notOk(isMounted(mnt), 'unmounted')
  await waitFor('STOPPING=1', () => messages.some(m => m.fields?.STOPPING === '1'), 10_000).catch(() => undefined)
  t.ok(messages.some(m => m.fields?.STOPPING === '1'), 'STOPPING=1 was sent on the way down')

  // systemctl stop without ExecStop is SIGTERM to the main process: a clean stop too.
  const again = spawn(execStart[0], execStart.slice(1), { env: { ...process.env, NOTIFY_SOCKET: sock }, stdio: 'ignore' })
  const againExit = new Promise<number | null>(resolve => again.on('exit', c => resolve(c)))
  t.teardown(() => { if (again.exitCode === null) again.kill('SIGKILL') })
  const readyCount = messages.filter(m => m.fields?.READY === '1').length
  await waitFor('READY=1 again', () => messages.filter(m => m.fields?.READY === '1').length > readyCount || again.exitCode !== null, 60_000)
  again.kill('SIGTERM')
  t.equal(await againExit, 0, 'SIGTERM: exit 0')
  t.notOk(isMounted(mnt), 'unmounted after SIGTERM')
  t.equal((await logdisk('verify', store)).code, 0, 'verify is clean')
})
