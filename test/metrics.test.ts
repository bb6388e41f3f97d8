// Metrics: a real mount with --metrics on 127.0.0.1, scraped during fio with direct I/O on
// current.img: the byte counters move by what fio did (within 1%); the stats file in the mount
// folder says the same; status shows the rates of the last minute; passes and errors count;
// the Grafana dashboard in examples/ asks only for metrics the endpoint serves.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import t from 'tap'
import { canMount, cleanup, logdisk, run, tmpDir } from './helpers/cli'

t.setTimeout(600_000)
const skip = canMount()

type Sample = { name: string, labels: Record<string, string>, value: number }

function parseProm (text: string): Sample[] {
  const out: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!m) throw new Error(`not a sample line: ${line}`)
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2]
    out.push({ name: m[1], labels, value: Number(m[3]) })
  }
  return out
}

function value (samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples.filter(s => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0)
}

function get (url: string): Promise<{ status: number, body: string, type: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: 30_000 }, res => {
      let body = ''
      res.on('data', d => { body += d })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, type: String(res.headers['content-type']) }))
    })
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)))
    req.on('error', reject)
  })
}

function fio (args: string[]): Promise<{ code: number | null, json: any, during: number }> {
  return new Promise(resolve => {
    const child = spawn('fio', [...args, '--output-format=json'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout!.on('data', d => { out += d })
    child.stderr!.on('data', d => { out += d })
    const timer = setTimeout(() => child.kill('SIGKILL'), 300_000)
    child.on('exit', code => {
      clearTimeout(timer)
      let json: any
      try { json = JSON.parse(out.slice(out.indexOf('{'))) } catch { json = { error: out } }
      resolve({ code, json, during: 0 })
    })
  })
}

t.test('/metrics during fio: bytes within 1%, latency histograms, stats file, status rates, passes, errors', { skip }, async t => {
  const dir = tmpDir('metrics')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  const img = path.join(mnt, 'current.img')
  t.equal((await logdisk('create', store, '--size', '512M', '--segment-size', '16M')).code, 0)
  const m = await logdisk('mount', store, mnt, '--metrics', '127.0.0.1:0')
  t.equal(m.code, 0, m.stderr)
  const address = JSON.parse(fs.readFileSync(path.join(store, 'daemon.json'), 'utf8')).metrics as string
  t.match(address, /^127\.0\.0\.1:\d+$/, 'daemon.json says where metrics are served')
  t.match(m.stdout, new RegExp(`metrics http://${address}/metrics`), 'mount says so too')
  const url = `http://${address}/metrics`
  const scrape = async (): Promise<Sample[]> => {
    const r = await get(url)
    if (r.status !== 200) throw new Error(`GET /metrics: ${r.status}`)
    return parseProm(r.body)
  }
  const first = await get(url)
  t.equal(first.status, 200)
  t.match(first.type, /^text\/plain; version=0\.0\.4/, 'Prometheus text format')
  t.equal((await get(`http://${address}/nope`)).status, 404)
  const before = parseProm(first.body)
  for (const name of ['logdisk_log_bytes', 'logdisk_segments', 'logdisk_pool_capacity_bytes', 'logdisk_pool_used_bytes', 'logdisk_history_horizon_seq', 'logdisk_pass_runs_total', 'logdisk_space_bytes']) {
    t.ok(before.some(s => s.name === name), `${name} is served`)
  }
  t.equal(value(before, 'logdisk_segments', { state: 'current' }), 1, 'segments by state')

  // Writes: fio, direct I/O, while the endpoint is scraped.
  const W = 192 * 1024 * 1024
  const writing = fio(['--name=w', `--filename=${img}`, '--rw=write', '--bs=1M', `--size=${W}`, '--direct=1', '--ioengine=libaio', '--iodepth=4'])
  let done = false
  void writing.then(() => { done = true })
  const seen: number[] = []
  while (!done) {
    seen.push(value(await scrape(), 'logdisk_io_bytes_total', { image: 'current.img', op: 'write' }))
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  const w = await writing
  t.equal(w.code, 0, `fio write: ${JSON.stringify(w.json).slice(0, 300)}`)
  const fioWritten = w.json.jobs[0].write.io_bytes as number
  t.equal(fioWritten, W, 'fio wrote what it was asked')
  t.ok(seen.length >= 1, `scraped ${seen.length} time(s) during the write`)
  t.ok(seen.every((v, i) => i === 0 || v >= seen[i - 1]), 'the byte counter only grows')
  const afterWrite = await scrape()
  const wrote = value(afterWrite, 'logdisk_io_bytes_total', { image: 'current.img', op: 'write' }) - value(before, 'logdisk_io_bytes_total', { image: 'current.img', op: 'write' })
  t.ok(Math.abs(wrote - fioWritten) <= fioWritten * 0.01, `write bytes moved by ${wrote}, fio wrote ${fioWritten} (within 1%)`)
  const writeOps = value(afterWrite, 'logdisk_io_operations_total', { image: 'current.img', op: 'write' })
  t.ok(writeOps >= W / (1024 * 1024), `${writeOps} write requests counted`)
  t.equal(value(afterWrite, 'logdisk_io_duration_seconds_count', { image: 'current.img', op: 'write' }), writeOps, 'the latency histogram saw every write')
  t.ok(afterWrite.some(s => s.name === 'logdisk_io_duration_seconds_bucket' && s.labels.op === 'write' && s.labels.le === '+Inf'), 'latency buckets per image and op')
  t.ok(value(afterWrite, 'logdisk_log_bytes') >= W, 'log size grew by at least what was written')
  t.ok(value(afterWrite, 'logdisk_written_bytes') >= W, 'written bytes')

  // Reads.
  const R = 64 * 1024 * 1024
  const r = await fio(['--name=r', `--filename=${img}`, '--rw=randread', '--bs=64k', `--size=${R}`, '--direct=1', '--ioengine=libaio', '--iodepth=8'])
  t.equal(r.code, 0, 'fio read')
  const fioRead = r.json.jobs[0].read.io_bytes as number
  const afterRead = await scrape()
  const read = value(afterRead, 'logdisk_io_bytes_total', { image: 'current.img', op: 'read' }) - value(afterWrite, 'logdisk_io_bytes_total', { image: 'current.img', op: 'read' })
  t.ok(Math.abs(read - fioRead) <= fioRead * 0.01, `read bytes moved by ${read}, fio read ${fioRead} (within 1%)`)
  t.ok(value(afterRead, 'logdisk_flush_duration_seconds_count') >= 1, 'flushes are timed')

  // The stats file beside the images: the same figures.
  t.ok(fs.readdirSync(mnt).includes('stats'), 'the mount folder has a stats file')
  t.equal(fs.statSync(path.join(mnt, 'stats')).mode & 0o777, 0o444, 'read-only')
  const statsText = fs.readFileSync(path.join(mnt, 'stats'), 'utf8')
  const stats = parseProm(statsText.split('\n').filter(l => !l.startsWith('#')).join('\n'))
  t.equal(value(stats, 'logdisk_io_bytes_total', { image: 'current.img', op: 'write' }), value(afterRead, 'logdisk_io_bytes_total', { image: 'current.img', op: 'write' }), 'stats: the same write bytes as /metrics')
  t.ok(stats.some(s => s.name === 'logdisk_segments'), 'stats: segments by state')
  t.ok(stats.some(s => s.name === 'rate_write_bytes_per_sec'), 'stats: rates')
  t.throws(() => fs.writeFileSync(path.join(mnt, 'stats'), 'x'), /EROFS|EACCES|EPERM/, 'stats cannot be written')

  // status: rates of the last minute.
  const st = await logdisk('status', store, '--json')
  const status = JSON.parse(st.stdout)
  t.ok(status.rates.writeBytesPerSec > 0, `status --json rates: ${JSON.stringify(status.rates)}`)
  t.ok(status.rates.windowSeconds > 0 && status.rates.windowSeconds <= 65, 'over at most the last minute')
  t.equal(status.metrics, address)
  t.match((await logdisk('status', store)).stdout, /^rates +read .*\/s .*write .*\/s .* over the last \d+ s$/m, 'status shows rates')

  // Passes and errors.
  const c = await logdisk('compact', store)
  t.equal(c.code, 0, c.stderr)
  const afterCompact = await scrape()
  t.equal(value(afterCompact, 'logdisk_pass_runs_total', { pass: 'compact', result: 'ok' }) - value(afterRead, 'logdisk_pass_runs_total', { pass: 'compact', result: 'ok' }), 1, 'a compaction run is counted')
  t.equal(value(afterCompact, 'logdisk_pass_duration_seconds_count', { pass: 'compact' }), value(afterCompact, 'logdisk_pass_runs_total', { pass: 'compact' }), 'and timed')
  const fd = fs.openSync(img, 'r+')
  t.throws(() => fs.writeSync(fd, Buffer.alloc(4096), 0, 4096, 512 * 1024 * 1024 - 2048), { code: 'EFBIG' })
  fs.closeSync(fd)
  const afterError = await scrape()
  t.ok(value(afterError, 'logdisk_errors_total', { op: 'write' }) >= 1, `errors by code: ${JSON.stringify(afterError.filter(s => s.name === 'logdisk_errors_total'))}`)

  // The Grafana dashboard queries only metrics served here.
  const dashboard = JSON.parse(fs.readFileSync('examples/grafana-logdisk.json', 'utf8'))
  const exprs: string[] = JSON.stringify(dashboard).match(/"expr":"(?:[^"\\]|\\.)*"/g) ?? []
  t.ok(exprs.length >= 8, `${exprs.length} panel queries`)
  const served = new Set(afterError.map(s => s.name))
  for (const e of exprs) {
    for (const name of e.match(/logdisk_[a-z_]+/g) ?? []) t.ok(served.has(name), `dashboard metric ${name} is served`)
  }

  t.equal((await logdisk('unmount', mnt)).code, 0)
  // Off by default: no endpoint, the stats file all the same.
  t.equal((await logdisk('mount', store, mnt)).code, 0)
  t.equal(JSON.parse(fs.readFileSync(path.join(store, 'daemon.json'), 'utf8')).metrics, undefined, 'no endpoint without --metrics')
  t.match(fs.readFileSync(path.join(mnt, 'stats'), 'utf8'), /logdisk_log_bytes \d+/, 'stats without --metrics')
  const refused = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', url])
  t.not(refused.stdout, '200', 'the old endpoint is gone')
  t.equal((await logdisk('unmount', mnt)).code, 0)
})

t.test('--metrics with a bad address fails in the caller\'s terminal', { skip }, async t => {
  const dir = tmpDir('metrics-bad')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  t.equal((await logdisk('create', store, '--size', '16M')).code, 0)
  const bad = await logdisk('mount', store, path.join(dir, 'mnt'), '--metrics', 'nonsense')
  t.equal(bad.code, 1)
  t.match(bad.stderr, /^logdisk: --metrics "nonsense" is not HOST:PORT/)
})
