import client from 'prom-client'

/**
 * Per-request I/O accounting in plain numbers, handed to prom-client only when someone reads
 * the metrics (a scrape, the `stats` file).
 *
 * Why: prom-client hashes the label object on every `inc` and `observe`, also through a
 * child from `labels()`, and allocates for each; with three calls per request that was
 * ~450 ms of the event loop's 14 s in a CPU profile of 10 s of random 4 KiB reads at depth 16
 * (~100 ms now), and a tenth of what a random write allocates (sampled allocation profile;
 * issue 11). Random reads at depth 16 on the raw image, three alternating pairs on a busy
 * machine: 29,757 / 27,008 / 25,746 IOPS against 22,402 / 31,453 / 20,048; an earlier build
 * that skipped the accounting altogether: 32,315 / 33,703 / 27,470 against 28,461 / 29,924 /
 * 27,243. Here a request costs a few additions on an object found by two map lookups.
 */
export class IoTally {
  ops = 0
  bytes = 0
  /** Observations per bound (not cumulative); one past every bound counts in `count` only (+Inf). */
  readonly counts: Float64Array
  sum = 0
  count = 0
  /** What the counters were given so far (they take increments). */
  opsExported = 0
  bytesExported = 0

  constructor (readonly labels: { image: string, op: string }, private readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length)
  }

  observe (seconds: number): void {
    let i = 0
    while (i < this.bounds.length && seconds > this.bounds[i]) i++
    if (i < this.counts.length) this.counts[i]++
    this.sum += seconds
    this.count++
  }
}

/** The tallies by operation and image, in the order they were first used. */
export class IoTallies {
  private readonly byOp = new Map<string, Map<string, IoTally>>()
  private readonly all: IoTally[] = []

  constructor (readonly bounds: readonly number[]) {}

  get (image: string, op: string): IoTally {
    let images = this.byOp.get(op)
    if (images === undefined) this.byOp.set(op, images = new Map())
    let t = images.get(image)
    if (t === undefined) {
      images.set(image, t = new IoTally({ image, op }, this.bounds))
      this.all.push(t)
    }
    return t
  }

  /**
   * Registers the tallies in `registry` as three metrics: the requests and bytes as
   * prom-client Counters with labels image and op (each brought up to date, both at once, when
   * either is read: counters take increments, so what each tally has passed on is kept), and
   * the latencies as a histogram of ours that reads the same values, in the same shape, as a
   * prom-client Histogram given the same observations (test/metrics-io-tally.test.ts compares
   * the two).
   */
  register (registry: client.Registry, names: { ops: Named, bytes: Named, seconds: Named }): void {
    const all = this.all
    const exportCounters = (): void => {
      for (const t of all) {
        if (t.ops > t.opsExported) ops.inc(t.labels, t.ops - t.opsExported)
        if (t.bytes > t.bytesExported) bytes.inc(t.labels, t.bytes - t.bytesExported)
        t.opsExported = t.ops
        t.bytesExported = t.bytes
      }
    }
    const counter = (n: Named): client.Counter<'image' | 'op'> => new client.Counter({ ...n, labelNames: ['image', 'op'], registers: [registry], collect: exportCounters })
    const ops = counter(names.ops)
    const bytes = counter(names.bytes)
    registry.registerMetric(new IoHistogram(names.seconds.name, names.seconds.help, all, this.bounds) as unknown as client.Metric)
  }
}

/** A metric's name and help text. */
export interface Named { name: string, help: string }

interface Value { labels: Record<string, string | number>, sharedLabels: Record<string, string>, value: number, metricName: string, exemplar?: null }

/** The latencies of IoTallies.register: what a registry asks of a metric (name, help, type, get). */
export class IoHistogram {
  readonly type = 'histogram'
  readonly aggregator = 'sum'

  constructor (readonly name: string, readonly help: string, private readonly tallies: readonly IoTally[], private readonly bounds: readonly number[]) {}

  /** What the registry's text exposition reads: each value's own labels and the shared ones apart. */
  getForPromString (): { name: string, help: string, type: string, values: Value[], aggregator: string } {
    const values: Value[] = []
    for (const t of this.tallies) {
      if (t.count === 0) continue
      let acc = 0
      for (let i = 0; i < this.bounds.length; i++) {
        acc += t.counts[i]
        values.push({ labels: { le: this.bounds[i] }, sharedLabels: t.labels, value: acc, metricName: `${this.name}_bucket`, exemplar: null })
      }
      values.push({ labels: { le: '+Inf' }, sharedLabels: t.labels, value: t.count, metricName: `${this.name}_bucket`, exemplar: null })
      values.push({ labels: {}, sharedLabels: t.labels, value: t.sum, metricName: `${this.name}_sum` })
      values.push({ labels: {}, sharedLabels: t.labels, value: t.count, metricName: `${this.name}_count` })
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator }
  }

  /** As prom-client's Histogram.get: the shared labels merged into each value's. */
  async get (): Promise<{ name: string, help: string, type: string, values: Array<Omit<Value, 'sharedLabels'>>, aggregator: string }> {
    const data = this.getForPromString()
    return { ...data, values: data.values.map(({ sharedLabels, labels, ...v }) => ({ ...v, labels: { ...labels, ...sharedLabels } })) }
  }

  reset (): void {
    for (const t of this.tallies) {
      t.counts.fill(0)
      t.sum = 0
      t.count = 0
    }
  }
}
