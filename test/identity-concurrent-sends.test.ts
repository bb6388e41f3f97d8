// Sends at once in one process (the mount daemon serves several) all write <store>/identities
// through the same temporary name (pid): whatever interleaving, the file left is whole and its
// entries true, and a torn or interleaved file is only ever ignored.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { readIdentities } from '../src/copy/identity-cache'
import { sendStreamTo } from '../src/copy/send'
import { walkIdentities } from '../src/copy/set-identity'
import { Store } from '../src/store/store'
import { tmpDir } from './helpers/cli'

const B = 4096

t.test('concurrent sends leave a valid identity file whose entries are the walks', { timeout: 60_000 }, async t => {
  const root = tmpDir('identity-concurrent')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const dir = path.join(root, 'src')
  await Store.create(dir, { sizeBytes: 4 << 20, blockBytes: B })
  const { store } = await openStore(dir, { checkpointIntervalMs: 0 })
  try {
    const names: string[] = []
    for (let i = 0; i < 6; i++) {
      await store.write(i * 7 * B, crypto.randomBytes(3 * B))
      if (i % 2 === 1) await store.discard((i - 1) * 7 * B, B)
      names.push((await store.snapshot({ name: `s${i}` })).name)
    }
    for (let round = 0; round < 3; round++) {
      await Promise.all(names.map((n, i) => sendStreamTo(store, n, i > 0 && round > 0 ? names[i - 1] : undefined, { out: path.join(root, `${round}-${n}.stream`) })))
      const kept = readIdentities(store)
      t.ok(kept.size >= 1, `round ${round}: the file is readable (${kept.size} entries)`)
      for (const [seq, identity] of kept) t.equal(identity, (await walkIdentities(store, [seq]))[0], `round ${round}: cut ${seq}`)
    }
    t.same(fs.readdirSync(dir).filter(f => f.includes('.tmp')), [], 'no temporary file left')
  } finally {
    await store.close()
  }
})
