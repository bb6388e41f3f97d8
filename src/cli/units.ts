import { LogdiskError } from '../errors'

const UNITS: Record<string, number> = { '': 1, B: 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4, P: 1024 ** 5 }

/** Parses "8G", "4K", "64MiB", "1.5T" or plain bytes (binary units, as dd and qemu-img read them). */
export function parseSize (text: string, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*$/i.exec(text)
  if (!m) throw new LogdiskError('BAD_ARGUMENT', `${what} "${text}" is not a size; use a number with K, M, G or T (like 8G)`)
  const bytes = Number(m[1]) * UNITS[m[2].toUpperCase()]
  if (!Number.isSafeInteger(Math.round(bytes)) || bytes <= 0) throw new LogdiskError('BAD_ARGUMENT', `${what} "${text}" is out of range`)
  return Math.round(bytes)
}

export { formatBytes, exactSize } from '../size-text'

/** A whole positive number given on the command line (`--id 3`): says so when it is not one. */
export function parseWhole (text: string, what: string): number {
  const n = Number(text)
  if (!/^\s*\d+\s*$/.test(text) || !Number.isSafeInteger(n) || n <= 0) {
    throw new LogdiskError('BAD_ARGUMENT', `${what} "${text}" is not a whole number above 0 (like ${what === '--id' ? '3' : '1'})`)
  }
  return n
}
