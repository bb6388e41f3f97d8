// Generates the man page docs/logdisk.1 from the command line's own help text (the commander
// program in dist/), so the two never disagree: `make man` (after make build).
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..')
const { buildProgram } = require(path.join(repo, 'dist/src/cli/main.js'))
const { version } = require(path.join(repo, 'package.json'))
const program = buildProgram()
const esc = s => s.replace(/\\/g, '\\e').replace(/^\./gm, '\\&.').replace(/-/g, '\\-')
const out = [
  `.TH LOGDISK 1 "${new Date().toISOString().slice(0, 10)}" "logdisk ${version}" "User Commands"`,
  '.SH NAME', `logdisk \\- ${esc(program.description())}`,
  '.SH SYNOPSIS', '.B logdisk', '\\fICOMMAND\\fR [\\fIOPTIONS\\fR]', '.br', '.B logdisk', '\\fISTORE\\fR \\fIMOUNTPOINT\\fR \\fB\\-o\\fR \\fIOPTIONS\\fR (the form mount.fuse runs)',
  '.SH DESCRIPTION', esc('Every command works on a mounted store (through the daemon\'s control socket) and on an unmounted one. Every command takes --json. docs/CLI.md in the source has the full reference.'),
  '.SH COMMANDS'
]
const walk = (cmd, prefix) => {
  for (const c of cmd.commands) {
    const name = `${prefix}${c.name()}`
    if (c.commands.length > 0) { walk(c, `${name} `); continue }
    out.push('.TP', `.B logdisk ${esc(name)} ${esc(c.usage())}`, esc(c.description() || ''))
    for (const o of c.options) out.push('.RS', '.TP', `.B ${esc(o.flags)}`, esc(o.description || ''), '.RE')
  }
}
walk(program, '')
out.push('.SH EXIT STATUS', esc('0 on success; 1 for an error the user can act on (one line: logdisk: ...; under --json {"error":{"code","message"}}); 70 for an internal error.'))
out.push('.SH SEE ALSO', '.BR mount (8), ' + '.BR losetup (8), ' + '.BR systemd.service (5)')
fs.writeFileSync(path.join(repo, 'docs/logdisk.1'), out.join('\n') + '\n')
console.log('wrote docs/logdisk.1')
