import type { Command } from 'commander'

/** What a file of src/cli/commands exports: it adds its command(s) to the program. */
export interface CommandModule {
  register: (program: Command) => void
}

/**
 * The command modules by the names they register, in the order `--help` lists them, each
 * required only when asked for. Loading all of them (and through them the copy, archive,
 * replication, daemon and FUSE code) took a third of a CLI command's start-up (about 190
 * modules, where `status` uses about 140): main registers only the command its arguments name.
 */
const TABLE: Array<[string[], () => CommandModule]> = [
  [['create'], () => require('./commands/create')],
  [['adopt'], () => require('./commands/adopt')],
  [['mount'], () => require('./commands/mount')],
  [['unmount'], () => require('./commands/unmount')],
  [['attach', 'detach'], () => require('./commands/attach')],
  [['status'], () => require('./commands/status')],
  [['snapshot'], () => require('./commands/snapshot')],
  [['snapshots'], () => require('./commands/snapshots')],
  [['delete'], () => require('./commands/delete')],
  [['sync'], () => require('./commands/sync')],
  [['log'], () => require('./commands/log')],
  [['restore'], () => require('./commands/restore')],
  [['resize'], () => require('./commands/resize')],
  [['compact'], () => require('./commands/compact')],
  [['archive'], () => require('./commands/archive')],
  [['clone', 'promote'], () => require('./commands/clone')],
  [['pool'], () => require('./commands/pool')],
  [['policy'], () => require('./commands/policy')],
  [['verify'], () => require('./commands/verify')],
  [['export'], () => require('./commands/export')],
  [['send'], () => require('./commands/send')],
  [['receive'], () => require('./commands/receive')],
  [['diff'], () => require('./commands/diff')],
  [['criteria'], () => require('./commands/criteria')],
  [['completion'], () => require('./commands/completion')]
]

/** Commands that work from the whole command list (the completion script lists every command). */
const NEED_ALL = new Set(['completion', 'help'])

/** The module registering command `name`, or every module when `name` is not one of theirs or needs them all. */
export function commandModules (name?: string): CommandModule[] {
  const one = name !== undefined && !NEED_ALL.has(name) ? TABLE.find(([names]) => names.includes(name)) : undefined
  return (one ? [one] : TABLE).map(([, load]) => load())
}
