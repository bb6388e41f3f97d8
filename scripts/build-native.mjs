#!/usr/bin/env node
// Builds native/page-cache.c into build/page-cache.node (src/store/page-cache.ts) with the C
// compiler and Node's own headers (the include/node directory of the node that runs this; no
// node-gyp, no download). Optional: without a compiler or headers it says so in one line and
// exits 0, and logdisk runs without dropping pages (slower sequential writes on some VMs).
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const src = path.join(root, 'native', 'page-cache.c')
const out = path.join(root, 'build', 'page-cache.node')
const include = path.join(path.dirname(path.dirname(fs.realpathSync(process.execPath))), 'include', 'node')

if (process.platform !== 'linux') process.exit(0) // posix_fadvise's DONTNEED is what Linux honours
if (fs.existsSync(out) && fs.statSync(out).mtimeMs >= fs.statSync(src).mtimeMs) process.exit(0)
if (!fs.existsSync(path.join(include, 'node_api.h'))) {
  console.log(`build-native: ${include}/node_api.h not found; building without the page-cache addon`)
  process.exit(0)
}
const cc = process.env.CC || 'cc'
fs.mkdirSync(path.dirname(out), { recursive: true })
try {
  execFileSync(cc, ['-O2', '-Wall', '-Wextra', '-Werror', '-shared', '-fPIC', `-I${include}`, src, '-o', out + '.tmp'], { stdio: ['ignore', 'inherit', 'inherit'] })
  fs.renameSync(out + '.tmp', out)
} catch (err) {
  console.log(`build-native: ${cc} failed (${err.message.split('\n')[0]}); building without the page-cache addon`)
  fs.rmSync(out + '.tmp', { force: true })
}
