// The event-loop reader of /dev/fuse (src/fuse/devfuse/polled-channel.ts) over a UDP socket
// on 127.0.0.1: the same poll and read(2) calls as on /dev/fuse, and the same shape of data:
// one message per read(2), shorter than the buffer (so libuv, as on /dev/fuse, reads one per
// wake-up and the channel reads the rest itself). What it must keep: every request whole and
// in order, requests that arrive together handed over together (the server's `queued`), no
// more buffers than its slots (the spare read included).
import dgram from 'node:dgram'
import { Worker } from 'node:worker_threads'
import t, { type Test } from 'tap'
import { PolledChannel, pollingAvailable } from '../src/fuse/devfuse/polled-channel'
import { silentLogger } from '../src/store/logger'
import { loadAddon } from '../src/store/native-addon'

const SIZE = 4096
const BUFFER = 2 * SIZE
const readNowMissing = loadAddon<{ readNow?: unknown }>('page-cache')?.readNow === undefined
const skip = pollingAvailable() ? false : 'this Node cannot poll a descriptor (no pipe_wrap binding)'

function message (seq: number): Buffer {
  const b = Buffer.alloc(SIZE, seq & 0xff)
  b.writeUInt32LE(seq, 0)
  return b
}

/**
 * A bound UDP socket whose descriptor the channel reads (the socket itself never reads it:
 * the channel's handle owns the descriptor and closes it), and a sender.
 */
async function datagrams (t: Test): Promise<{ fd: number, send: (b: Buffer) => Promise<void> }> {
  const rx = dgram.createSocket('udp4')
  await new Promise<void>(resolve => rx.bind(0, '127.0.0.1', resolve))
  rx.unref()
  // Its handle stops watching the descriptor (libuv lets one handle watch a descriptor).
  // `_handle` is deprecated (DEP0112) and the only way to it: its warning is kept quiet.
  process.noDeprecation = true
  const handle = (rx as unknown as { _handle: { fd: number, recvStop: () => number } })._handle
  process.noDeprecation = false
  handle.recvStop()
  const fd = handle.fd
  const tx = dgram.createSocket('udp4')
  t.teardown(() => tx.close())
  const port = rx.address().port
  return { fd, send: b => new Promise((resolve, reject) => tx.send(b, port, '127.0.0.1', err => err ? reject(err) : resolve())) }
}

const tick = (ms = 20): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

async function until (what: string, ok: () => boolean): Promise<void> {
  const end = Date.now() + 10_000
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await tick(5)
  }
}

t.test('requests arrive whole and in order; those that wait together are handed over together', { skip, timeout: 30_000 }, async t => {
  const { fd, send } = await datagrams(t)
  const ch = new PolledChannel({ slots: 8, bufferBytes: BUFFER, log: silentLogger, fd })
  const seen: Array<{ seq: number, whole: boolean, queued: number }> = []
  ch.start((req, n, release) => {
    const seq = req.readUInt32LE(0)
    seen.push({ seq, whole: n === SIZE && req.subarray(0, n).equals(message(seq)), queued: ch.queued })
    release()
  })
  for (let i = 0; i < 5; i++) await send(message(i))
  ch.mounted()
  await until('5 requests', () => seen.length === 5)
  t.same(seen.map(s => s.seq), [0, 1, 2, 3, 4], 'in order')
  t.ok(seen.every(s => s.whole), 'every byte of each')
  t.equal(seen[0].queued, 4, 'the first was handed over with the other four queued behind it')
  t.equal(ch.stats.woken + ch.stats.readAfter, 5, 'five reads')
  t.ok(ch.stats.readAfter >= 4, `${ch.stats.readAfter} read in the same turn as the wake-up`)
  for (let i = 5; i < 8; i++) {
    await send(message(i))
    await until(`request ${i}`, () => seen.length === i + 1)
  }
  t.same(seen.slice(5).map(s => [s.seq, s.queued]), [[5, 0], [6, 0], [7, 0]], 'one at a time: nothing queued behind')
  t.ok(ch.slotsTouched <= 8, `${ch.slotsTouched} buffers used, within its 8 slots`)
  ch.stop()
  t.equal(await ch.ended, 'stopped')
})

t.test('every slot busy: reading pauses with the spare armed; each request still arrives whole, in order, within the slots', { skip, timeout: 30_000 }, async t => {
  const { fd, send } = await datagrams(t)
  const slots = 3
  const ch = new PolledChannel({ slots, bufferBytes: BUFFER, log: silentLogger, fd })
  const held: Array<{ seq: number, req: Buffer, release: () => void }> = []
  const done: number[] = []
  let maxHeld = 0
  ch.start((req, n, release) => {
    t.equal(n, SIZE)
    held.push({ seq: req.readUInt32LE(0), req, release })
    maxHeld = Math.max(maxHeld, held.length)
  })
  ch.mounted()
  for (let i = 0; i < 12; i++) await send(message(i))
  await until('the slots to fill', () => held.length === slots)
  await tick(50)
  t.equal(held.length, slots, `no more than ${slots} requests held at once`)
  t.equal(ch.stats.spare, 0, 'reading paused: the spare buffer is armed, nothing read into it while no slot is free')
  // Finish them one at a time, oldest first, checking each buffer still holds its request.
  while (done.length < 12) {
    await until(`request ${done.length}`, () => held.length > 0)
    const h = held.shift()!
    t.ok(h.req.subarray(0, SIZE).equals(message(h.seq)), `request ${h.seq} intact while held`)
    done.push(h.seq)
    h.release()
    await tick(2)
  }
  t.same(done, [...Array(12).keys()], 'all twelve, in order')
  t.ok(maxHeld <= slots, `at most ${maxHeld} held`)
  t.ok(ch.slotsTouched <= slots, `${ch.slotsTouched} slots of ${slots} ever allocated`)
  t.ok(ch.stats.spare >= 1, `${ch.stats.spare} read into the spare and copied`)
  ch.stop()
  t.equal(await ch.ended, 'stopped')
})

t.test('one request at a time: after a probe of the queue finds nothing the next ones skip it, at most 8 in a row; a burst after that still goes out together', { skip, timeout: 30_000 }, async t => {
  const { fd, send } = await datagrams(t)
  const ch = new PolledChannel({ slots: 16, bufferBytes: BUFFER, log: silentLogger, fd })
  const seen: Array<{ seq: number, queued: number }> = []
  ch.start((req, n, release) => {
    t.equal(n, SIZE)
    seen.push({ seq: req.readUInt32LE(0), queued: ch.queued })
    release()
  })
  ch.mounted()
  for (let i = 0; i < 20; i++) {
    await send(message(i))
    await until(`request ${i}`, () => seen.length === i + 1)
  }
  t.equal(ch.stats.readAfter, 0, 'one at a time: no probe found anything')
  // Probes at requests 1, 3, 6, 11 and 20 (skipping 1, 2, 4, 8, 8 after each).
  t.equal(ch.stats.probesSkipped, 15, `${ch.stats.probesSkipped} of 20 drains skipped the probe`)
  // Ten sent in one go: libuv reads one per turn; once a drain probes again it takes the rest.
  await Promise.all(Array.from({ length: 10 }, (_, k) => send(message(20 + k))))
  await until('the burst', () => seen.length === 30)
  t.same(seen.map(s => s.seq), [...Array(30).keys()], 'every request, in order')
  const burst = seen.slice(20)
  const firstTogether = burst.findIndex(s => s.queued > 0)
  t.ok(firstTogether >= 0 && firstTogether <= 8, `the burst went out together from its request ${firstTogether} (at most 8 skipped probes first)`)
  t.ok(ch.stats.readAfter > 0, `${ch.stats.readAfter} read by the probe`)
  ch.stop()
  t.equal(await ch.ended, 'stopped')
})

/**
 * A client on a thread of its own (so that it answers while the channel's thread polls) with a
 * UDP socket the channel's descriptor is connected to: the channel's replies (send) reach it,
 * and `pauseMs` after each it sends the next request.
 */
async function pingPong (t: Test, count: number, pauseMs: number): Promise<{ fd: number, done: Promise<void> }> {
  const rx = dgram.createSocket('udp4')
  await new Promise<void>(resolve => rx.bind(0, '127.0.0.1', resolve))
  rx.unref()
  const worker = new Worker(`
    const { parentPort, workerData } = require('node:worker_threads')
    const dgram = require('node:dgram')
    const s = dgram.createSocket('udp4')
    s.bind(0, '127.0.0.1', () => parentPort.postMessage(s.address().port))
    let next = 0
    const send = () => {
      const b = Buffer.alloc(${SIZE}, next & 0xff)
      b.writeUInt32LE(next++, 0)
      s.send(b, workerData.port, '127.0.0.1')
    }
    s.on('message', () => {
      if (next === workerData.count) { s.close(); parentPort.postMessage('done'); return }
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, workerData.pauseMs)
      send()
    })
    parentPort.on('message', () => send())
  `, { eval: true, workerData: { port: rx.address().port, count, pauseMs } })
  t.teardown(() => worker.terminate())
  const port = await new Promise<number>(resolve => worker.once('message', resolve))
  await new Promise<void>(resolve => rx.connect(port, '127.0.0.1', resolve))
  process.noDeprecation = true
  const handle = (rx as unknown as { _handle: { fd: number, recvStop: () => number } })._handle
  process.noDeprecation = false
  handle.recvStop()
  const done = new Promise<void>(resolve => worker.on('message', m => { if (m === 'done') resolve() }))
  worker.postMessage('start')
  return { fd: handle.fd, done }
}

const REPLY = Buffer.from('reply')

t.test('a client at depth 1: after each reply the channel reads on and finds the next request there, not after a sleep in epoll', { skip: skip || (readNowMissing && 'the page-cache addon is not built (it polls with its readNow)'), timeout: 60_000 }, async t => {
  const count = 100
  // The client answers 3 ms after each reply: the poll has begun by then (else libuv, in the
  // turn before the poll, would read a request that came at once), and a budget of 100 ms is
  // more than a loaded machine keeps the client's thread waiting.
  const { fd, done } = await pingPong(t, count, 3)
  const ch = new PolledChannel({ slots: 8, bufferBytes: BUFFER, log: silentLogger, fd, pollUs: 100_000 })
  const seen: number[] = []
  let whole = 0
  ch.start((req, n, release) => {
    const seq = req.readUInt32LE(0)
    seen.push(seq)
    if (n === SIZE && req.subarray(0, n).equals(message(seq))) whole++
    release()
    ch.send(REPLY, REPLY.length)
  })
  ch.mounted()
  await done
  t.same(seen, [...Array(count).keys()], 'every request, in order')
  t.equal(whole, count, 'every byte of each')
  t.ok(ch.stats.polled >= count / 2, `${ch.stats.polled} of ${count} found by the poll after a reply (${ch.stats.woken} read by libuv)`)
  // The one after the last reply, and a few whose client a loaded machine kept waiting past the
  // 100 ms budget (2 of 100 in a suite run beside a simulation batch on this 2-core machine).
  t.ok(ch.stats.pollMissed <= 1 + count / 20, `${ch.stats.pollMissed} polls came up empty (the one after the last reply, and at most ${count / 20} a loaded machine delays)`)
  ch.stop()
  t.equal(await ch.ended, 'stopped')
})

t.test('a client that pauses between requests: a poll that finds nothing makes the next 1, 2, 4, 8, 16 skip it', { skip: skip || (readNowMissing && 'the page-cache addon is not built'), timeout: 60_000 }, async t => {
  const count = 40
  const { fd, done } = await pingPong(t, count, 25)
  const ch = new PolledChannel({ slots: 8, bufferBytes: BUFFER, log: silentLogger, fd, pollUs: 1000 })
  const seen: number[] = []
  ch.start((req, n, release) => {
    seen.push(req.readUInt32LE(0))
    release()
    ch.send(REPLY, REPLY.length)
  })
  ch.mounted()
  await done
  await tick(20) // the poll after the last reply
  t.same(seen, [...Array(count).keys()], 'every request, in order')
  t.equal(ch.stats.polled, 0, 'no request came within 1 ms of a reply')
  // 40 replies: polls after replies 1, 3, 6, 11, 20 and 37, each skipping 1, 2, 4, 8, 16, 16 after it.
  t.equal(ch.stats.pollMissed, 6, `${ch.stats.pollMissed} polls spent`)
  t.equal(ch.stats.pollsSkipped, 34, `${ch.stats.pollsSkipped} skipped`)
  t.equal(ch.stats.woken, count, 'each request woke the loop')
  ch.stop()
  t.equal(await ch.ended, 'stopped')
})

t.test('idle request buffers give their pages back; buffers in use keep every byte; requests after it arrive whole', { skip: skip || (readNowMissing && 'the page-cache addon is not built'), timeout: 30_000 }, async t => {
  // Buffers of 4 MiB, as a burst of large writes leaves them: filled to the end. A buffer is
  // released only once a whole interval passed without a request in it.
  const big = 4 * 1048576
  const { fd, send } = await datagrams(t)
  const ch = new PolledChannel({ slots: 4, bufferBytes: big, log: silentLogger, fd })
  const held: Array<{ seq: number, req: Buffer, release: () => void }> = []
  const seen: number[] = []
  ch.start((req, n, release) => {
    const seq = req.readUInt32LE(0)
    seen.push(seq)
    if (n !== SIZE || !req.subarray(0, n).equals(message(seq))) t.fail(`request ${seq} not whole`)
    if (seq < 3) held.push({ seq, req, release })
    else release()
  })
  ch.mounted()
  for (let i = 0; i < 3; i++) await send(message(i))
  await until('three requests held', () => held.length === 3)
  for (const h of held) h.req.fill(0xab, SIZE)
  const rss = (): number => process.memoryUsage().rss
  const touched = rss()
  ch.releaseIdleBuffers()
  ch.releaseIdleBuffers()
  t.ok(held.every(h => h.req.subarray(0, SIZE).equals(message(h.seq)) && h.req.subarray(SIZE).every(b => b === 0xab)), 'the buffers of requests in flight keep every byte')
  const bufs = held.map(h => h.req)
  for (const h of held.splice(0)) h.release()
  ch.releaseIdleBuffers()
  t.ok(bufs.every(b => b[big - 8192] === 0xab), 'given back this interval: kept until a whole interval passed unused')
  const released = ch.releaseIdleBuffers()
  t.ok(released >= 3 * (big - 8192), `${released} bytes given back`)
  t.ok(bufs.every(b => b[big - 8192] === 0 && b[big / 2] === 0), 'their pages read as zeros: released')
  t.ok(touched - rss() >= 8 * 1048576, `resident ${(touched / 1048576).toFixed(0)} -> ${(rss() / 1048576).toFixed(0)} MiB`)
  t.equal(ch.releaseIdleBuffers(), 0, 'given back once: not advised again while they stay idle')
  for (let i = 3; i < 9; i++) await send(message(i))
  await until('six more', () => seen.length === 9)
  t.same(seen, [...Array(9).keys()], 'the requests after it arrive whole, in order')
  ch.releaseIdleBuffers()
  t.ok(ch.releaseIdleBuffers() >= big - 8192, 'a buffer used again is given back again after an idle interval')
  ch.stop()
  t.equal(await ch.ended, 'stopped')
})
