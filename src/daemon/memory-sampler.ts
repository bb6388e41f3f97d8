import fs from 'node:fs'
import v8 from 'node:v8'

/**
 * A diagnostic for issue 11 (daemon peak RSS): with LOGDISK_MEMORY_SAMPLE=<file> the daemon
 * samples /proc/self/status, process.memoryUsage() and the V8 heap spaces every
 * LOGDISK_MEMORY_SAMPLE_MS (100) ms and appends a JSON line at every new VmHWM and once a
 * second otherwise. Off (nothing runs) unless the variable is set.
 */
export function startMemorySampler (env: NodeJS.ProcessEnv = process.env): (() => void) | undefined {
  const file = env.LOGDISK_MEMORY_SAMPLE
  if (!file) return undefined
  const every = Number(env.LOGDISK_MEMORY_SAMPLE_MS) || 100
  let hwm = 0
  let last = 0
  const kib = (status: string, key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0)
  const timer = setInterval(() => {
    let status: string
    try { status = fs.readFileSync('/proc/self/status', 'utf8') } catch { return }
    const now = Date.now()
    const h = kib(status, 'VmHWM')
    if (h <= hwm && now - last < 1000) return
    const peak = h > hwm
    hwm = Math.max(hwm, h)
    last = now
    const mu = process.memoryUsage()
    const mib = (b: number): number => Math.round(b / 1048576 * 10) / 10
    const spaces: Record<string, number> = {}
    for (const s of v8.getHeapSpaceStatistics()) spaces[s.space_name.replace(/_space$/, '')] = mib(s.space_size)
    const line = {
      t: now, peak, hwm: mib(h * 1024), rss: mib(kib(status, 'VmRSS') * 1024), anon: mib(kib(status, 'RssAnon') * 1024), file: mib(kib(status, 'RssFile') * 1024),
      heapTotal: mib(mu.heapTotal), heapUsed: mib(mu.heapUsed), external: mib(mu.external), arrayBuffers: mib(mu.arrayBuffers), spaces
    }
    fs.appendFileSync(file, JSON.stringify(line) + '\n')
  }, every)
  timer.unref()
  return () => clearInterval(timer)
}
