// The daemon counts and times each request in plain numbers (src/metrics/io-tally.ts) and
// hands them to prom-client only when the metrics are read. What a scrape shows must be what
// prom-client's own Histogram and Counters show for the same requests: the same text
// exposition, line for line, and the same JSON.
import client from 'prom-client'
import t from 'tap'
import { IoTallies } from '../src/metrics/io-tally'
import { Rng } from '../src/testing/rng'

const BOUNDS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
const NAME = 'logdisk_io_duration_seconds'
const HELP = 'Time to answer an I/O request, by image and operation'

function registries (): { ours: client.Registry, theirs: client.Registry } {
  const ours = new client.Registry()
  const theirs = new client.Registry()
  for (const r of [ours, theirs]) r.setDefaultLabels({ store: '/s', mountpoint: '/m "quoted"' })
  return { ours, theirs }
}

t.test('the histogram and counters read as prom-client\'s own, fed the same requests', async t => {
  const { ours, theirs } = registries()
  const io = new IoTallies(BOUNDS)
  io.register(ours, { ops: { name: 'ops_total', help: 'ops' }, bytes: { name: 'bytes_total', help: 'bytes' }, seconds: { name: NAME, help: HELP } })
  const hist = new client.Histogram({ name: NAME, help: HELP, labelNames: ['image', 'op'], buckets: BOUNDS, registers: [theirs] })
  const ops = new client.Counter({ name: 'ops_total', help: 'ops', labelNames: ['image', 'op'], registers: [theirs] })
  const bytes = new client.Counter({ name: 'bytes_total', help: 'bytes', labelNames: ['image', 'op'], registers: [theirs] })

  const rng = new Rng(11)
  const images = ['current.img', 'a.img', 'b "x".img']
  const kinds = ['read', 'write', 'flush']
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 5000; i++) {
      const image = images[rng.range(0, images.length - 1)]
      const op = kinds[rng.range(0, kinds.length - 1)]
      // Around every bound, exactly on some, and past the last.
      const seconds = rng.range(0, 9) === 0 ? BOUNDS[rng.range(0, BOUNDS.length - 1)] : rng.range(0, 20) === 0 ? 11 + rng.range(0, 100) : rng.range(1, 2_000_000) / 1e6
      const n = op === 'flush' ? 0 : 4096 * rng.range(1, 256)
      const tally = io.get(image, op)
      tally.observe(seconds)
      tally.ops++
      if (n > 0) tally.bytes += n
      hist.observe({ image, op }, seconds)
      ops.inc({ image, op })
      if (n > 0) bytes.inc({ image, op }, n)
    }
    // Read after each round: the counters take only what is new each time.
    const sorted = (text: string): string[] => text.split('\n').filter(Boolean).sort()
    t.same(sorted(await ours.metrics()), sorted(await theirs.metrics()), `round ${round}: the same text exposition`)
    const json = async (r: client.Registry): Promise<unknown> => (await r.getMetricsAsJSON()).map(m => ({ ...m, values: [...(m.values as unknown[])].map(v => JSON.stringify(v)).sort() })).sort((a, b) => a.name.localeCompare(b.name))
    t.same(await json(ours), await json(theirs), `round ${round}: the same JSON`)
  }
  const text = await ours.metrics()
  t.match(text, /logdisk_io_duration_seconds_bucket\{le="\+Inf",store="\/s",mountpoint="\/m \\"quoted\\"",image="current.img",op="read"\} \d+/, 'labels in prom-client\'s order, quotes escaped')
})

t.test('an image and op with no request shows nothing; one request shows every bucket', async t => {
  const { ours } = registries()
  const io = new IoTallies(BOUNDS)
  io.register(ours, { ops: { name: 'ops_total', help: 'ops' }, bytes: { name: 'bytes_total', help: 'bytes' }, seconds: { name: NAME, help: HELP } })
  t.notMatch(await ours.metrics(), /_bucket/, 'no values before any request')
  io.get('current.img', 'write').observe(0.0003)
  const lines = (await ours.metrics()).split('\n').filter(l => l.startsWith(`${NAME}_bucket`))
  t.equal(lines.length, BOUNDS.length + 1, 'a line per bound and +Inf')
  t.same(lines.map(l => Number(l.split(' ').pop())), [0, 0, ...new Array(BOUNDS.length - 1).fill(1)], '0.0003 s counts from the 0.0005 bound on')
})
