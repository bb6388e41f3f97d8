#!/usr/bin/env node
import { Command } from 'commander'
import { mountHelperArgv } from './mount-options'
import { jsonMode, oneLine, reportError, setJsonMode } from './output'
import { addWaitOption } from './lock-wait'
import { commandModules, type CommandModule } from './command-table'

// eslint-disable-next-line @typescript-eslint/no-var-requires
const { version } = require('../../../package.json') as { version: string }

export { reportError }

/**
 * Every command, registered on one commander program (the test that walks the commands builds
 * it too); `only`: just the module of that command name, when it names one (main's dispatch:
 * a command loads what it uses, not every other command's modules).
 */
export function buildProgram (only?: string): Command {
  const program = new Command('logdisk')
    .description('a virtual disk that keeps every write in a log: current.img over FUSE, snapshots, point-in-time restore')
    .version(version)
    .showHelpAfterError(!jsonMode())
  // Usage errors (commander's) under --json: the same {"error":...} object, exit 1. Set before
  // the commands are added: they inherit it.
  if (jsonMode()) {
    program.configureOutput({
      outputError: (text, write) => write(`${JSON.stringify({ error: { code: 'USAGE', message: oneLine(text.trim().replace(/^error: /, '')) } })}\n`)
    })
  }
  for (const command of commandModules(only) as CommandModule[]) command.register(program)
  addWaitOption(program)
  return program
}

/**
 * The command an argument list names: its first argument that is not an option (the program's
 * own options, --version, --help and --json, take no value). Anything else (a mount.fuse
 * helper's SOURCE, a typo, no command) matches no command module and every command loads.
 */
function commandNameOf (args: string[]): string | undefined {
  return args.find(a => !a.startsWith('-'))
}

async function main (): Promise<void> {
  setJsonMode(process.argv.slice(2).includes('--json'))
  const program = buildProgram(commandNameOf(process.argv.slice(2)))
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
