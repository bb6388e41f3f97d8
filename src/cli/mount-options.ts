import { LogdiskError } from '../errors'

/**
 * Mount options as mount(8) and /etc/fstab give them (`-o allow_other,ro,metrics=...`), for
 * `logdisk mount ... -o LIST` and for the form mount.fuse runs: `logdisk SOURCE MOUNTPOINT -o
 * LIST` (fstab: `/srv/disk /mnt/disk fuse.logdisk allow_other,nofail 0 0`).
 */
export interface MountOptions {
  allowOther?: boolean
  readOnly?: boolean
  /** HOST:PORT of the Prometheus endpoint (src/metrics). */
  metrics?: string
  transport?: string
}

/**
 * Options mount(8), systemd and fstab hand every filesystem that mean nothing to logdisk:
 * accepted and ignored, so a usual fstab line works. (`sync` and `noatime` and friends are
 * about a filesystem's files; logdisk serves images whose writes are durable on flush.)
 */
const IGNORED = new Set([
  'rw', 'defaults', 'auto', 'noauto', 'nofail', '_netdev', 'user', 'nouser', 'users', 'owner', 'group',
  'dev', 'nodev', 'suid', 'nosuid', 'exec', 'noexec', 'async', 'sync', 'dirsync',
  'atime', 'noatime', 'diratime', 'nodiratime', 'relatime', 'norelatime', 'strictatime', 'nostrictatime',
  'lazytime', 'nolazytime', 'symfollow', 'nosymfollow', 'silent', 'loud', 'default_permissions'
])
const IGNORED_PREFIXES = ['x-', 'comment=', 'fsname=', 'subtype=']

export const KNOWN_OPTIONS = 'allow_other, ro, rw, metrics=HOST:PORT, transport=devfuse|fuse-native|auto'

/** Parses one comma-separated option list; later options win (`ro,rw` is rw). */
export function parseMountOptions (list: string, into: MountOptions = {}): MountOptions {
  for (const raw of list.split(',')) {
    const opt = raw.trim()
    if (opt === '') continue
    const eq = opt.indexOf('=')
    const key = eq < 0 ? opt : opt.slice(0, eq)
    const value = eq < 0 ? undefined : opt.slice(eq + 1)
    if (key === 'allow_other') into.allowOther = true
    else if (key === 'ro') into.readOnly = true
    else if (key === 'rw') into.readOnly = false
    else if (key === 'metrics' && value) into.metrics = value
    else if (key === 'transport' && value) into.transport = value
    else if (IGNORED.has(opt) || IGNORED_PREFIXES.some(p => opt.startsWith(p))) continue
    else throw new LogdiskError('BAD_ARGUMENT', `unknown mount option "${opt}"; logdisk takes ${KNOWN_OPTIONS} (and ignores generic ones such as nofail, _netdev, noauto, x-systemd.*)`)
  }
  return into
}

/**
 * The argv of mount.fuse's call, `logdisk SOURCE MOUNTPOINT [-o LIST] [-n] [-s] [-v] [-f]`,
 * as the argv of `logdisk mount SOURCE MOUNTPOINT [-o LIST]`; undefined when argv is an
 * ordinary command line (its first word is a command or an option). `-f` (mount's "fake")
 * becomes `{ fake: true }`: nothing is to be done.
 */
export function mountHelperArgv (args: readonly string[], commands: ReadonlySet<string>): { argv: string[], fake: boolean } | undefined {
  const [first] = args
  if (first === undefined || first.startsWith('-') || commands.has(first)) return undefined
  const positional: string[] = []
  const options: string[] = []
  let fake = false
  for (let i = 0; i < args.length; i++) {
    const a = args[i]
    if (a === '-o') {
      if (args[i + 1] === undefined) throw new LogdiskError('BAD_ARGUMENT', '-o needs a list of mount options')
      options.push(args[++i])
    } else if (a.startsWith('-o')) options.push(a.slice(2))
    else if (a === '-n' || a === '-s' || a === '-v') continue // no mtab, sloppy, verbose: mount(8)'s own
    else if (a === '-f') fake = true
    else if (a.startsWith('-')) return undefined // not the helper form: let commander explain
    else positional.push(a)
  }
  if (positional.length !== 2) return undefined
  const argv = ['mount', positional[0], positional[1]]
  if (options.length > 0) argv.push('-o', options.join(','))
  return { argv, fake }
}
