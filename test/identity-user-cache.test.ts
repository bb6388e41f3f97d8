// Identities remembered by read-only sends (a `send` run directly on an unmounted store) go to
// the user's cache directory (src/copy/identity-cache.ts, userIdentityFile), never into the
// store: the store's files stay byte for byte as they were (CLI.md); the next incremental send
// carries them instead of walking every block, and its stream has the same records and
// identities as one made without them; an entry of a snapshot deleted and cut again under the
// same name is not used; the store's own file is still read, and wins.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { IDENTITY_FILE, readIdentities, rememberIdentities, userIdentityFile } from '../src/copy/identity-cache'
import { receiveStream } from '../src/copy/receive'
import { sendStreamTo } from '../src/copy/send'
import * as setIdentity from '../src/copy/set-identity'
import { readStream } from '../src/copy/stream-format'
import { Store } from '../src/store/store'
import { CLI, run, tmpDir } from './helpers/cli'
import { newStreamStore } from './helpers/stream-stores'
import { checksumTree, diffTrees } from './helpers/tree'

const B = 4096
const SIZE = 8 << 20

async function writeBlocks (s: Store, blocks: number[]): Promise<void> {
  for (const b of blocks) await s.write(b * B, crypto.randomBytes(B))
  await s.flush()
}

/** A stream's header identities and its records (block, count, type, data), without the time it was made. */
async function contents (file: string): Promise<unknown[]> {
  const out: unknown[] = []
  for await (const r of readStream(file)) {
    if ('header' in r) out.push({ ...r.header, createdAt: undefined })
    else if ('trailer' in r) out.push(r.trailer)
    else out.push({ type: r.type, block: r.block, count: r.count, data: r.type === 'data' ? crypto.createHash('sha256').update(r.data).digest('hex') : null })
  }
  return out
}

/** Sends `name` (from `from`) on a read-only open of `dir`, as `logdisk send` does when the store is not mounted. */
async function readOnlySend (dir: string, name: string, from: string | undefined, out: string): Promise<void> {
  const { store } = await openStore(dir, {}, [], 'read')
  try {
    await sendStreamTo(store, name, from, { out, force: true })
  } finally {
    await store.close()
  }
}

t.test('a read-only send remembers identities outside the store; the next incremental send carries them, same stream', async t => {
  const root = tmpDir('identity-user-cache')
  const cache = path.join(root, 'user-cache')
  const saved = process.env.LOGDISK_CACHE_DIR
  process.env.LOGDISK_CACHE_DIR = cache
  t.teardown(() => {
    if (saved === undefined) delete process.env.LOGDISK_CACHE_DIR
    else process.env.LOGDISK_CACHE_DIR = saved
    fs.rmSync(root, { recursive: true, force: true })
  })
  const dir = path.join(root, 'src')
  let s = await newStreamStore(root, 'src', SIZE)
  await writeBlocks(s, [0, 1, 2, 9, 100, 1500, 2000])
  const a = await s.snapshot({ name: 'a' })
  await writeBlocks(s, [1, 5, 2000, 1900])
  await s.discard(100 * B, B)
  const b = await s.snapshot({ name: 'b' })
  const [walkedA, walkedB] = await setIdentity.walkIdentities(s, [a.seq, b.seq])
  const uuid = s.config.uuid
  await s.close()
  const userFile = userIdentityFile(uuid)!
  t.equal(userFile, path.join(cache, `${IDENTITY_FILE}-${uuid}`), 'the user file is named by the store uuid, in LOGDISK_CACHE_DIR')

  // Without any remembered identity: the reference stream (walked).
  await readOnlySend(dir, 'b', 'a', path.join(root, 'ab-walked.stream'))
  fs.rmSync(cache, { recursive: true, force: true })

  const before = checksumTree(dir)
  await readOnlySend(dir, 'a', undefined, path.join(root, 'a.stream'))
  t.same(diffTrees(before, checksumTree(dir)), [], 'the full send wrote nothing in the store')
  t.notOk(fs.existsSync(path.join(dir, IDENTITY_FILE)), 'no identity file in the store')
  t.ok(fs.existsSync(userFile), 'the user cache file was written')
  t.equal((fs.statSync(userFile).mode & 0o777), 0o600, 'readable by the user alone')

  // The incremental send carries a's identity to b: no walk (a walk is Store.versionsAt over every block).
  const walks: number[][] = []
  const { store: ro } = await openStore(dir, {}, [], 'read')
  t.same([...readIdentities(ro)], [[a.seq, walkedA]], 'a read-only open reads a\'s identity from the user file')
  const versionsAt = ro.versionsAt.bind(ro)
  ro.versionsAt = (seqs, ...rest) => { walks.push(seqs); return versionsAt(seqs, ...rest) }
  try {
    await sendStreamTo(ro, 'b', 'a', { out: path.join(root, 'ab.stream') })
  } finally {
    await ro.close()
  }
  t.same(walks, [], 'no identity was walked')
  t.same(diffTrees(before, checksumTree(dir)), [], 'the incremental send wrote nothing in the store')
  t.same(await contents(path.join(root, 'ab.stream')), await contents(path.join(root, 'ab-walked.stream')), 'the same stream as the one sent with the identities walked')
  const header = (await contents(path.join(root, 'ab.stream')))[0] as { snapshot: { identity: string }, from: { identity: string } }
  t.equal(header.snapshot.identity, walkedB, 'b\'s carried identity equals its walk')
  t.equal(header.from.identity, walkedA)

  // The streams apply; the receiver (open for writing) keeps its identities in its own file.
  const dst = await newStreamStore(root, 'dst', SIZE)
  try {
    await receiveStream(dst, path.join(root, 'a.stream'))
    await receiveStream(dst, path.join(root, 'ab.stream'))
    t.equal(crypto.createHash('sha256').update(await dst.readSnapshot('b', 0, SIZE)).digest('hex'), await imageSha(dir, 'b'), 'b received byte for byte')
    t.ok(fs.existsSync(path.join(dst.dir, IDENTITY_FILE)), 'the receiver remembered in its store')
    t.notOk(fs.existsSync(userIdentityFile(dst.config.uuid)!), 'and not in the user cache')
  } finally {
    await dst.close()
  }

  // b deleted and cut again under the same name: its remembered entry is not used.
  s = (await openStore(dir)).store
  try {
    await s.deleteSnapshot('b')
    await writeBlocks(s, [7])
    const b2 = await s.snapshot({ name: 'b' })
    t.notOk(readIdentities(s).has(b2.seq), 'the old b\'s entry does not describe the new b')
    t.equal((await setIdentity.setIdentitiesAt(s, [b2.seq]))[0], (await setIdentity.walkIdentities(s, [b2.seq]))[0], 'the new b\'s identity is computed again')
    // The store's own file is read too, and wins over the user's.
    t.ok(await rememberIdentities(s, new Map([[a.seq, 'c2-store']]), s.sizeBytes), 'a write open remembers in the store')
    t.equal(readIdentities(s).get(a.seq), 'c2-store', 'the store\'s entry wins over the user\'s')
  } finally {
    await s.close()
  }
})

async function imageSha (dir: string, name: string): Promise<string> {
  const { store } = await openStore(dir, {}, [], 'read')
  try {
    return crypto.createHash('sha256').update(await store.readSnapshot(name, 0, store.sizeBytes)).digest('hex')
  } finally {
    await store.close()
  }
}

t.test('logdisk send run directly keeps the store byte for byte and remembers in the user cache', async t => {
  const root = tmpDir('identity-user-cache-cli')
  const cache = path.join(root, 'user-cache')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const s = await newStreamStore(root, 'src', SIZE)
  await writeBlocks(s, [0, 3, 4])
  await s.snapshot({ name: 'a' })
  const uuid = s.config.uuid
  await s.close()
  const dir = path.join(root, 'src')
  const before = checksumTree(dir)
  const sent = await run(process.execPath, [CLI, 'send', dir, 'a', '--out', path.join(root, 'a.stream')], { env: { LOGDISK_CACHE_DIR: cache } })
  t.equal(sent.code, 0, sent.stderr)
  t.same(diffTrees(before, checksumTree(dir)), [], 'nothing in the store changed')
  t.ok(fs.existsSync(path.join(cache, `${IDENTITY_FILE}-${uuid}`)), 'the identity went to LOGDISK_CACHE_DIR')
  // An unwritable cache directory costs nothing but the cache.
  fs.rmSync(cache, { recursive: true, force: true })
  fs.writeFileSync(cache, 'not a directory')
  const r = await run(process.execPath, [CLI, 'send', dir, 'a', '--out', path.join(root, 'a2.stream')], { env: { LOGDISK_CACHE_DIR: cache } })
  t.equal(r.code, 0, `a send with no usable cache directory still sends ${r.stderr}`)
  t.equal(r.stderr, '', 'and says nothing of it')
})
