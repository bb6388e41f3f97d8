// The bad-input matrix of issue 10: every command against one kind of bad input, asserting the
// exit code, exactly one line on stderr without "internal error", and that every store
// involved is byte-identical before and after, except where the command was meant to write.
import fs from 'node:fs'
import path from 'node:path'
import tap, { type Test } from 'tap'
import { CLI, cleanup, isMounted, logdisk, must, run, tmpDir, type Run } from './cli'
import { checksumTree, diffTrees } from './tree'
import { openStore } from '../../src/app/open'
import { applyAssignments, readPolicy, writePolicy } from '../../src/policy/policy'

export const MiB = 1024 * 1024

export function pattern (seed: number, bytes: number): Buffer {
  const out = Buffer.alloc(bytes)
  let x = (seed * 2654435761) >>> 0
  for (let i = 0; i < bytes; i += 4) { x = (x * 1664525 + 1013904223) >>> 0; out.writeUInt32LE(x, i) }
  return out
}

export interface Fixture {
  /** A healthy store: data, snapshots s1 and s2, an archive target. Copied (and adopted) per case. */
  template: string
  /** A full send stream of another store (for receive --force). */
  stream: string
  /** Where outputs and pool volumes of commands go. */
  work: string
}

/** Writes `data` at `offset` through the library and, with `snap`, cuts a snapshot. */
export async function writeStore (dir: string, offset: number, data: Buffer, snap?: string): Promise<void> {
  const { store } = await openStore(dir)
  try {
    for (let at = 0; at < data.length; at += 128 * 1024) await store.write(offset + at, data.subarray(at, at + 128 * 1024))
    await store.flush()
    if (snap) await store.snapshot({ name: snap })
  } finally {
    await store.close()
  }
}

export async function makeFixture (root: string, opts: { dataBytes?: number, sizeArg?: string } = {}): Promise<Fixture> {
  const work = path.join(root, 'work')
  fs.mkdirSync(work, { recursive: true })
  const template = path.join(root, 'template')
  await must(process.execPath, CLI, 'create', template, '--size', opts.sizeArg ?? '64M', '--segment-size', '2M')
  const bytes = opts.dataBytes ?? 3 * MiB
  await writeStore(template, 0, pattern(1, bytes), 's1')
  await writeStore(template, bytes / 2, pattern(2, MiB), 's2')
  await must(process.execPath, CLI, 'sync', template, '--note', 'noted')
  const archive = path.join(root, 'archive')
  fs.mkdirSync(archive)
  writePolicy(template, applyAssignments(readPolicy(template), [`archive.target=${archive}`, 'compact.every=0']))
  const other = path.join(root, 'other')
  await must(process.execPath, CLI, 'create', other, '--size', '64M', '--segment-size', '2M')
  await writeStore(other, 0, pattern(3, MiB), 'r1')
  const stream = path.join(root, 'r1.stream')
  await must(process.execPath, CLI, 'send', other, 'r1', '--out', stream)
  return { template, stream, work }
}

/** A new store with its own identity, a copy of the template (cp -a, then adopt). */
export async function freshStore (fx: Fixture, dir: string): Promise<string> {
  await must('cp', '-a', fx.template, dir)
  await must(process.execPath, CLI, 'adopt', dir)
  return dir
}

export interface Ctx {
  store: string
  fx: Fixture
  /** A new output path (in fx.work unless a case says otherwise). */
  out: () => string
  mnt: string
}

export interface Command {
  name: string
  args: (c: Ctx) => string[]
  /** Only reads the store (it must then work on a read-only or full store, and on a copy). */
  reads: boolean
}

let outN = 0
export const COMMANDS: Command[] = [
  { name: 'status', reads: true, args: c => ['status', c.store] },
  { name: 'snapshots', reads: true, args: c => ['snapshots', c.store] },
  { name: 'log', reads: true, args: c => ['log', c.store] },
  { name: 'diff', reads: true, args: c => ['diff', c.store, 's1', 's2'] },
  { name: 'verify', reads: true, args: c => ['verify', c.store] },
  { name: 'pool list', reads: true, args: c => ['pool', 'list', c.store] },
  { name: 'policy show', reads: true, args: c => ['policy', 'show', c.store] },
  { name: 'criteria list', reads: true, args: c => ['criteria', 'list', c.store] },
  { name: 'restore', reads: true, args: c => ['restore', c.store, '--at', 's1', '--out', c.out()] },
  { name: 'export', reads: true, args: c => ['export', c.store, 's1', '--out', c.out()] },
  { name: 'send', reads: true, args: c => ['send', c.store, 's2', '--out', c.out()] },
  { name: 'snapshot', reads: false, args: c => ['snapshot', c.store, '--name', 'new'] },
  { name: 'sync', reads: false, args: c => ['sync', c.store, '--note', 'x'] },
  { name: 'delete', reads: false, args: c => ['delete', c.store, 's1'] },
  { name: 'compact', reads: false, args: c => ['compact', c.store] },
  { name: 'archive', reads: false, args: c => ['archive', c.store] },
  { name: 'pool add', reads: false, args: c => ['pool', 'add', c.store, path.join(c.fx.work, `vol-${++outN}`), '--spare'] },
  { name: 'policy set', reads: false, args: c => ['policy', 'set', c.store, 'mirror=1'] },
  { name: 'criteria create', reads: false, args: c => ['criteria', 'create', c.store, 'c1', '--target', path.join(c.fx.work, 'c1-{snapshot}.img')] },
  { name: 'receive', reads: false, args: c => ['receive', c.store, '--in', c.fx.stream, '--force'] },
  { name: 'mount', reads: false, args: c => ['mount', c.store, c.mnt] },
  { name: 'adopt', reads: false, args: c => ['adopt', c.store] }
]

export function newOut (dir: string): () => string {
  return () => path.join(dir, `out-${++outN}.img`)
}

/** Runs the CLI, as `user` when given (runuser), with a timeout: never hangs a test. */
export function cli (args: string[], opts: { user?: string, env?: Record<string, string> } = {}): Promise<Run> {
  // Without tap's NODE_OPTIONS: its process-info hook writes under .tap/, which the user cannot.
  if (opts.user) return run('runuser', ['-u', opts.user, '--', 'env', '-u', 'NODE_OPTIONS', process.execPath, CLI, ...args], { timeoutMs: 120_000, env: opts.env })
  return run(process.execPath, [CLI, ...args], { timeoutMs: 120_000, env: opts.env })
}

/** Asserts one refused run: exit code 1, one line matching `why`, nothing else. */
export function refused (t: Test, r: Run, why: RegExp, what: string): void {
  t.equal(r.code, 1, `${what}: exit 1 (got ${r.code}: ${r.stderr.trim()})`)
  oneLine(t, r.stderr, what)
  t.match(r.stderr, why, `${what}: says why`)
}

export function oneLine (t: Test, stderr: string, what: string): void {
  t.equal(stderr.trim().split('\n').length, 1, `${what}: exactly one line on stderr`)
  t.notMatch(stderr, /internal error|\n\s+at /, `${what}: no internal error, no stack`)
}

/** Asserts a successful run: exit 0, and stderr empty (or the lines `warn` allows). */
export function succeeded (t: Test, r: Run, what: string, warn?: RegExp): void {
  t.equal(r.code, 0, `${what}: exit 0 (stderr: ${r.stderr.trim()})`)
  if (warn) {
    oneLine(t, r.stderr, what)
    t.match(r.stderr, warn, `${what}: the one warning`)
  } else {
    t.equal(r.stderr, '', `${what}: nothing on stderr`)
  }
}

/** Checksums of several directories at once. */
export function snapshotTrees (dirs: string[]): Map<string, Map<string, string>> {
  return new Map(dirs.map(d => [d, fs.existsSync(d) ? checksumTree(d) : new Map()]))
}

export function sameTrees (t: Test, before: Map<string, Map<string, string>>, what: string): void {
  for (const [dir, sums] of before) {
    const now = fs.existsSync(dir) ? checksumTree(dir) : new Map<string, string>()
    t.same(diffTrees(sums, now), [], `${what}: ${path.basename(dir)} is byte-identical`)
  }
}

/** After a mount that was meant to succeed: unmount it again. */
export async function unmountIfMounted (mnt: string): Promise<void> {
  if (isMounted(mnt)) {
    const r = await logdisk('unmount', mnt)
    if (r.code !== 0) await run('fusermount', ['-uz', mnt])
  }
}

/**
 * The frame every matrix file shares: its file timeout (a loaded machine runs each CLI start
 * slowly; every run has its own 120 s bound), one fixture made before its tests unless
 * `skip`, and everything under its temp root cleaned up however the file ends.
 */
export function matrixFile (name: string, skip: string | false, opts?: Parameters<typeof makeFixture>[1]): { readonly fx: Fixture, readonly root: string } {
  tap.setTimeout(900_000)
  let fx: Fixture | undefined
  let root: string | undefined
  tap.before(async () => {
    if (skip) return
    root = tmpDir(`matrix-${name}`)
    fx = await makeFixture(root, opts)
  })
  tap.teardown(async () => { if (root) await cleanup(root) })
  return { get fx () { return fx! }, get root () { return root! } }
}
