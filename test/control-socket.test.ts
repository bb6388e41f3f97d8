// The daemon's control socket serves one request at a time per connection and reads the next
// only once its answer went out. Every line started its handler at once: a client that sent
// 200 `log` requests on one connection and read no answer ran the daemon out of memory, and
// other commands waited 10 minutes (a hostile test, helper-58).
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { ControlServer, request } from '../src/daemon/control'

t.test('a client that queues requests and reads nothing gets one at a time; others are served', { timeout: 60_000 }, async t => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-control-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const socket = path.join(dir, 'control.sock')
  let running = 0
  let most = 0
  let started = 0
  const server = await ControlServer.listen(socket, {
    big: async () => {
      started++
      most = Math.max(most, ++running)
      await new Promise(resolve => setTimeout(resolve, 10))
      running--
      return 'x'.repeat(4 * 1024 * 1024) // far more than a socket buffer holds
    },
    ping: async () => 'pong'
  })
  t.teardown(() => server.close())
  const greedy = net.createConnection(socket)
  await new Promise(resolve => greedy.once('connect', resolve))
  greedy.pause() // reads nothing
  greedy.write('{"op":"big"}\n'.repeat(200))
  await new Promise(resolve => setTimeout(resolve, 1500))
  t.equal(most, 1, 'its requests ran one at a time')
  t.ok(started <= 2, `and stopped once an answer waited unread in the socket (${started} of 200 started)`)
  const t0 = Date.now()
  t.equal(await request(socket, 'ping', {}, 5000), 'pong', 'another client is answered')
  t.ok(Date.now() - t0 < 2000, `at once (${Date.now() - t0} ms)`)
  greedy.destroy()

  const long = net.createConnection(socket)
  await new Promise(resolve => long.once('connect', resolve))
  const closed = new Promise(resolve => long.once('close', resolve))
  long.on('error', () => undefined)
  long.write('x'.repeat(2 * 1024 * 1024)) // no newline: not a request
  await closed
  t.pass('a line longer than any request ends its connection')
  t.equal(await request(socket, 'ping', {}, 5000), 'pong', 'and the server goes on')
})
