import cliProgress from 'cli-progress'

/** A progress bar on a terminal (cli-progress); nothing when output is not a terminal. */
export function progressBar (label: string, unit: 'MiB' | 'segments' | 'blocks' = 'MiB'): { update: (done: number, total: number) => void, stop: () => void } {
  if (!process.stderr.isTTY) return { update () {}, stop () {} }
  const bar = new cliProgress.SingleBar({
    format: unit === 'MiB' ? `${label} [{bar}] {percentage}% | {doneMiB}/{totalMiB} MiB` : `${label} [{bar}] {percentage}% | {value}/{total} ${unit}`,
    stream: process.stderr,
    hideCursor: true
  }, cliProgress.Presets.shades_classic)
  let started = false
  return {
    update (done, total) {
      const payload = { doneMiB: Math.round(done / 1048576), totalMiB: Math.round(total / 1048576) }
      if (!started) { bar.start(total, done, payload); started = true } else bar.update(done, payload)
    },
    stop () { if (started) bar.stop() }
  }
}
