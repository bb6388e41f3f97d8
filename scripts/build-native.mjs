#!/usr/bin/env node
// Builds each native/<name>.c into build/<name>.node (page-cache: src/store/page-cache.ts;
// block-crc: src/store/crc.ts) with the C compiler and Node's own headers (the include/node
// directory of the node that runs this; no node-gyp, no download). Optional: without a
// compiler or headers it says so in one line and exits 0, and logdisk runs without them
// (pages stay cached: slower sequential writes on some VMs; block CRCs one call per block).
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const include = path.join(path.dirname(path.dirname(fs.realpathSync(process.execPath))), 'include', 'node')
const ADDONS = ['page-cache', 'block-crc']

if (process.platform !== 'linux') process.exit(0) // posix_fadvise's DONTNEED is what Linux honours; SSE4.2 CRCs are x86-64 Linux builds
if (!fs.existsSync(path.join(include, 'node_api.h'))) {
  console.log(`build-native: ${include}/node_api.h not found; building without the native addons`)
  process.exit(0)
}
const cc = process.env.CC || 'cc'
for (const name of ADDONS) {
  const src = path.join(root, 'native', `${name}.c`)
  const out = path.join(root, 'build', `${name}.node`)
  if (fs.existsSync(out) && fs.statSync(out).mtimeMs >= fs.statSync(src).mtimeMs) continue
  fs.mkdirSync(path.dirname(out), { recursive: true })
  try {
    execFileSync(cc, ['-O2', '-Wall', '-Wextra', '-Werror', '-shared', '-fPIC', `-I${include}`, src, '-o', out + '.tmp'], { stdio: ['ignore', 'inherit', 'inherit'] })
    fs.renameSync(out + '.tmp', out)
  } catch (err) {
    console.log(`build-native: ${cc} failed on native/${name}.c (${err.message.split('\n')[0]}); building without it`)
    fs.rmSync(out + '.tmp', { force: true })
  }
}
