import crypto from 'node:crypto'
import t from 'tap'
import { resolveS3Settings, S3Target } from '../src/archive/s3'
import { startS3Server } from './helpers/s3-server'

/**
 * The in-process s3rver of the tests survives a PUT racing the DELETE of the last other key
 * under its prefix (test/helpers/s3-server.ts: s3rver removes the emptied directory, and its
 * own putObject then failed to open its file as an uncaught exception that ended the whole
 * test file: archive-lease.test.ts, once in a suite run). Every PUT that is answered OK must
 * read back.
 */
t.test('s3rver: PUTs racing DELETEs under one prefix neither crash the process nor lose an acknowledged object', async t => {
  const server = await startS3Server()
  t.teardown(() => server.stop())
  // Three prefixes in turn, each a directory of s3rver's that empties and fills again.
  const targets = [0, 1, 2].map(i => new S3Target(server.bucket, `race/p${i}`, resolveS3Settings('test', server.settings, {})))
  t.teardown(async () => { for (const target of targets) await target.close() })
  let acknowledged = 0
  const lost: number[] = []
  for (let round = 0; round < 150; round++) {
    const target = targets[round % 3]
    await target.put('other', Buffer.from('x'))
    const data = crypto.randomBytes(64)
    const [put] = await Promise.allSettled([target.put('mine', data), target.delete('other')])
    if (put.status === 'fulfilled') {
      acknowledged++
      if (!(await target.get('mine')).equals(data)) lost.push(round)
    }
    await target.delete('mine')
  }
  t.ok(acknowledged > 0, `${acknowledged} of 150 racing PUTs acknowledged`)
  t.same(lost, [], 'each of them reads back')
})
