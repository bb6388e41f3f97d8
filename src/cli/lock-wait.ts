import type { Command } from 'commander'
import { LogdiskError } from '../errors'

/**
 * How long a command on an unmounted store waits for the store's lock while another command
 * holds it (`--wait SECONDS`), instead of failing at once: two commands started together (a
 * cron job's snapshot and an operator's status) then both run, one after the other. A mounted
 * store never waits: its daemon answers.
 */
export const DEFAULT_WAIT_SECONDS = 5

let waitMs = DEFAULT_WAIT_SECONDS * 1000

export function lockWaitMs (): number { return waitMs }

/** The commands that open a store under its lock (through runOp, or themselves). */
const WAITING = new Set([
  'status', 'snapshot', 'snapshots', 'delete', 'sync', 'log', 'restore', 'resize', 'compact', 'archive',
  'clone', 'pool list', 'pool add', 'pool remove', 'pool repair', 'verify', 'export', 'send',
  'receive', 'diff'
])

/** Adds --wait to every command that takes the store's lock, and reads it before the command runs. */
export function addWaitOption (program: Command): void {
  const walk = (cmd: Command, prefix: string): void => {
    for (const c of cmd.commands) {
      const name = `${prefix}${c.name()}`
      if (c.commands.length > 0) walk(c, `${name} `)
      else if (WAITING.has(name)) c.option('--wait <seconds>', `wait this long for the store's lock when another command holds it (default ${DEFAULT_WAIT_SECONDS}; 0 fails at once)`)
    }
  }
  walk(program, '')
  program.hook('preAction', (_program, action) => {
    const text = action.opts().wait as string | undefined
    if (text !== undefined) waitMs = parseSeconds(text) * 1000
  })
}

function parseSeconds (text: string): number {
  const n = Number(text)
  if (!/^\s*\d+(\.\d+)?\s*$/.test(text) || !Number.isFinite(n)) {
    throw new LogdiskError('BAD_ARGUMENT', `--wait "${text}" is not a number of seconds (like ${DEFAULT_WAIT_SECONDS}, or 0 to fail at once)`)
  }
  return n
}

/** The lock error after the wait: the holder's name (in `err`) and how long it was waited for. */
export function waitedError (err: LogdiskError): LogdiskError {
  const waited = waitMs === 0 ? '' : ` (waited ${waitMs / 1000} s for it; --wait SECONDS waits longer)`
  return new LogdiskError('STORE_LOCKED', `${err.message}${waited}`, err)
}

export function sleep (ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms))
}
