/**
 * Sizes in messages, in one place for every layer: people read `1.5 GiB`; where the exact
 * number matters (a refused size, a device too small) both are given, `1.5 GiB (1610612736 bytes)`.
 */
export function formatBytes (n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++ }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`
}

/** `8.0 GiB (8589934592 bytes)`; below 1 KiB just `512 bytes`. */
export function exactSize (n: number): string {
  return n < 1024 ? `${n} bytes` : `${formatBytes(n)} (${n} bytes)`
}
