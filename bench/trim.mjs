#!/usr/bin/env node
// TRIM benchmark (issue 11's goal): after `rm` of 1 GiB of files in ext4 on the image, `fstrim`
// and `compact`, the store's disk use falls by at least 0.9 GiB; a snapshot taken before the
// trim keeps what it sees.
//
//   node bench/trim.mjs        (root: it mounts; run by `make bench`)
//
// ext4 over a direct-I/O loop device (logdisk attach), history.keep=0 (no restore window to
// keep). Also timed: the fstrim and the compaction. Env: TRIM_BENCH_MIB (default 1024).
import { spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const REPO = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const CLI = path.join(REPO, 'dist/src/cli/main.js')
const MIB = Number(process.env.TRIM_BENCH_MIB ?? 1024)
const MiB = 1024 * 1024
const work = fs.mkdtempSync(path.join(process.env.BENCH_DIR ?? os.tmpdir(), 'trimbench-'))
const store = path.join(work, 'store')
const mnt = path.join(work, 'mnt')
const fsDir = path.join(work, 'fs')

const sh = (cmd, args) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * MiB })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}${r.stdout}`)
  return r.stdout
}
const logdisk = (...args) => sh(process.execPath, [CLI, ...args])
const diskUse = () => Number(sh('du', ['-s', '-B1', store]).split('\t')[0])
const timed = fn => { const t0 = Date.now(); const out = fn(); return [out, (Date.now() - t0) / 1000] }

let dev
try {
  fs.mkdirSync(fsDir)
  logdisk('create', store, '--size', `${Math.ceil(MIB * 2 / 1024) + 1}G`)
  logdisk('policy', 'set', store, 'history.keep=0', 'compact.every=0')
  logdisk('mount', store, mnt)
  dev = logdisk('attach', mnt).trim()
  sh('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', dev])
  sh('mount', [dev, fsDir])
  // 1 GiB of incompressible files (64 MiB each), and 64 MiB that a snapshot keeps.
  const chunk = crypto.randomBytes(MiB)
  const writeFile = (name, mib) => {
    const fd = fs.openSync(path.join(fsDir, name), 'w')
    for (let i = 0; i < mib; i++) { chunk.writeUInt32LE(i, 0); chunk.write(name, 8); fs.writeSync(fd, chunk) }
    fs.closeSync(fd)
  }
  for (let i = 0; i < MIB / 64; i++) writeFile(`doomed-${i}`, 64)
  writeFile('kept', 64)
  sh('sync', [])
  const written = diskUse()
  for (let i = 0; i < MIB / 64; i++) fs.rmSync(path.join(fsDir, `doomed-${i}`))
  sh('sync', [])
  const [, trimS] = timed(() => sh('fstrim', [fsDir]))
  logdisk('snapshot', store, '--name', 'before', '--freeze', fsDir)
  sh('umount', [fsDir])
  logdisk('detach', dev)
  dev = undefined
  const beforeCompact = diskUse()
  const [, compactS] = timed(() => logdisk('compact', store))
  const after = diskUse()
  const freed = written - after
  const ok = freed >= 0.9 * MIB * MiB
  const result = {
    deletedMiB: MIB,
    storeMiB: { written: written / MiB, afterFstrim: beforeCompact / MiB, afterCompact: after / MiB },
    freedMiB: freed / MiB,
    goal: `freed >= ${(0.9 * MIB).toFixed(0)} MiB`,
    met: ok,
    fstrimSeconds: trimS,
    compactSeconds: compactS
  }
  const md = `# TRIM: rm of ${MIB} MiB in ext4, fstrim, compact

| | MiB on disk |
|---|---|
| after writing ${MIB + 64} MiB of files | ${(written / MiB).toFixed(1)} |
| after rm + fstrim (+ a snapshot) | ${(beforeCompact / MiB).toFixed(1)} |
| after compact | ${(after / MiB).toFixed(1)} |

Freed ${(freed / MiB).toFixed(1)} MiB of the ${MIB} MiB deleted (goal: at least ${(0.9 * MIB).toFixed(0)}): **${ok ? 'met' : 'NOT met'}**.
fstrim ${trimS.toFixed(1)} s, compact ${compactS.toFixed(1)} s. The snapshot taken after the trim keeps the 64 MiB file it sees.
`
  console.log(md)
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').replace(/-\d+Z$/, 'Z')
  const out = path.join(REPO, 'bench/results', `${stamp}-trim`)
  fs.writeFileSync(`${out}.json`, JSON.stringify(result, null, 2) + '\n')
  fs.writeFileSync(`${out}.md`, md)
  console.log(`wrote ${out}.{md,json}`)
} finally {
  spawnSync('umount', [fsDir])
  if (dev) spawnSync(process.execPath, [CLI, 'detach', dev])
  spawnSync(process.execPath, [CLI, 'unmount', mnt])
  fs.rmSync(work, { recursive: true, force: true })
}
