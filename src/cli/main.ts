#!/usr/bin/env node
import { Command } from 'commander'
import { LogdiskError } from '../errors'
import { mountHelperArgv } from './mount-options'
import * as adopt from './commands/adopt'
import * as archive from './commands/archive'
import * as attach from './commands/attach'
import * as compact from './commands/compact'
import * as create from './commands/create'
import * as criteria from './commands/criteria'
import * as diff from './commands/diff'
import * as exportCmd from './commands/export'
import * as receive from './commands/receive'
import * as send from './commands/send'
import * as del from './commands/delete'
import * as log from './commands/log'
import * as mount from './commands/mount'
import * as policy from './commands/policy'
import * as pool from './commands/pool'
import * as restore from './commands/restore'
import * as snapshot from './commands/snapshot'
import * as snapshots from './commands/snapshots'
import * as status from './commands/status'
import * as sync from './commands/sync'
import * as unmount from './commands/unmount'
import * as verify from './commands/verify'

// eslint-disable-next-line @typescript-eslint/no-var-requires
const { version } = require('../../../package.json') as { version: string }

/** Prints the one-line error every command ends with on failure, and sets the exit code. */
export function reportError (err: unknown): void {
  const sys = err as NodeJS.ErrnoException
  if (err instanceof LogdiskError) {
    process.stderr.write(`logdisk: ${oneLine(err.message)}\n`)
    process.exitCode = 1
  } else if (typeof sys?.code === 'string' && typeof sys.syscall === 'string') {
    // The operating system refused something a command did not foresee: still one line.
    process.stderr.write(`logdisk: ${oneLine(sys.message)}\n`)
    process.exitCode = 1
  } else {
    // A bug: one line; the stack only on request.
    const stack = process.env.LOGDISK_DEBUG ? `\n${(err as Error)?.stack ?? ''}` : ' (LOGDISK_DEBUG=1 prints the stack)'
    process.stderr.write(`logdisk: internal error: ${oneLine((err as Error)?.message ?? String(err))}${stack}\n`)
    process.exitCode = 70
  }
}

function oneLine (text: string): string {
  return text.replace(/\s*\n\s*/g, '; ')
}

/** Every command, registered on one commander program (the test that walks the commands builds it too). */
export function buildProgram (): Command {
  const program = new Command('logdisk')
    .description('a virtual disk that keeps every write in a log: current.img over FUSE, snapshots, point-in-time restore')
    .version(version)
    .showHelpAfterError()
  for (const command of [create, adopt, mount, unmount, attach, status, snapshot, snapshots, del, sync, log, restore, compact, archive, pool, policy, verify, exportCmd, send, receive, diff, criteria]) command.register(program)
  return program
}

async function main (): Promise<void> {
  const program = buildProgram()
  // mount.fuse (fstab, mount -t fuse.logdisk) runs `logdisk SOURCE MOUNTPOINT -o OPTIONS`.
  const commands = new Set(['help', ...program.commands.flatMap(c => [c.name(), ...c.aliases()])])
  const helper = mountHelperArgv(process.argv.slice(2), commands)
  if (helper?.fake) return
  if (helper) {
    // mount(8) runs helpers with no PATH at all: give the daemon's tools (mount, losetup) one.
    process.env.PATH ||= '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    await program.parseAsync([...process.argv.slice(0, 2), ...helper.argv])
    return
  }
  await program.parseAsync(process.argv)
}

if (require.main === module) main().catch(reportError)
