// The block CRCs the /dev/fuse reader threads compute (channel.ts crcBlockBytes) under load:
// many requests in flight reuse the shared slots and their CRC area all the time, at offsets
// past 4 GiB (the offset's high word), with sizes from one block to 1 MiB. fio writes and then
// reads back every block with its own checksum; verify then checks every entry's CRCs
// against the log. A CRC of another request's bytes would fail one or the other.
import path from 'node:path'
import fs from 'node:fs'
import t from 'tap'
import { loadAddon } from '../src/store/native-addon'
import { CLI, canMount, cleanup, logdisk, run, tmpDir } from './helpers/cli'

const skip = canMount()
// The poll after a reply reads with the page-cache addon's readNow.
const canPoll = loadAddon<{ readNow?: unknown }>('page-cache')?.readNow !== undefined

// Both ways of reading /dev/fuse (channel.ts): the reader threads, with their CRCs; the event
// loop polling it (polled-channel.ts), whose slots (the spare's copy included) and batched
// reads carry every request just as well.
for (const [how, readers] of [['reader threads', '2'], ['polled by the event loop', '0']] as const) t.test(`${how}: concurrent writes past 4 GiB, 4 KiB to 1 MiB: fio verifies the data, logdisk verify the log`, { skip, timeout: 300_000 }, async t => {
  const dir = tmpDir('devfuse-crcs-load')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  t.equal((await run(process.execPath, [CLI, 'create', store, '--size', '6G', '--segment-size', '16M'])).code, 0, 'created')
  // Polled: a poll after each reply of up to 1 ms (polled-channel.ts pollForNext; the most
  // allowed), long enough for fio's next request at depth 1 on a loaded machine.
  const m = await run(process.execPath, [CLI, 'mount', store, mnt, '--transport', 'devfuse'], { env: { LOGDISK_FUSE_READERS: readers, LOGDISK_FUSE_POLL_US: '1000' } })
  t.equal(m.code, 0, `mounted: ${m.stderr}`)
  const img = path.join(mnt, 'current.img')
  const fio = await run('fio', ['--name=crcs', `--filename=${img}`, '--offset=4G', '--size=96M', '--rw=randwrite', '--bsrange=4k-1m', '--bs_unaligned=0',
    '--iodepth=32', '--ioengine=libaio', '--direct=1', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--output-format=terse'])
  t.equal(fio.code, 0, `fio wrote and verified every block: ${fio.stderr.trim().split('\n').slice(-3).join(' | ')}`)
  // One request at a time: the polled channel reads each next one in its poll after the reply.
  const fio1 = await run('fio', ['--name=crcs1', `--filename=${img}`, '--offset=5G', '--size=8M', '--rw=randwrite', '--bs=4k',
    '--iodepth=1', '--ioengine=psync', '--direct=1', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--output-format=terse'])
  t.equal(fio1.code, 0, `fio wrote and verified every block one at a time: ${fio1.stderr.trim().split('\n').slice(-3).join(' | ')}`)
  t.equal((await logdisk('unmount', mnt)).code, 0, 'unmounted')
  const log = fs.readFileSync(path.join(store, 'daemon.log'), 'utf8').split('\n').filter(l => l.startsWith('{')).map(l => JSON.parse(l))
  const stats = log.find(l => l.msg === 'FUSE session statistics')!.stats
  if (readers !== '0') t.ok(stats.writesWithCrcs > 100, `${stats.writesWithCrcs} writes came with their block CRCs`)
  else {
    t.ok(stats.reads.readAfter > 0, `${stats.reads.readAfter} requests were read together with another (${stats.reads.woken} on a wake-up, ${stats.reads.spare} into the spare)`)
    // The poll after a reply ran; whether fio's next request came within its 50 us is up to
    // the machine (0 found in a quiet suite once: 24 polls found none). polled-channel.test.ts
    // checks that a poll finds a client's next request.
    if (canPoll) t.ok(stats.reads.polled + stats.reads.pollMissed > 0, `the poll after a reply ran: ${stats.reads.polled} requests read by it, ${stats.reads.pollMissed} polls found none, ${stats.reads.pollsSkipped} skipped`)
  }
  t.ok(stats.maxInflight >= 8, `up to ${stats.maxInflight} requests in flight`)
  const verify = await logdisk('verify', store)
  t.equal(verify.code, 0, `verify is clean: ${verify.stdout.trim().split('\n').pop()}`)
})

t.test('polled, idle request buffers given back every 20 ms: bursts of 1 MiB writes between pauses, fio verifies every block', { skip: skip || (!canPoll && 'the page-cache addon is not built'), timeout: 300_000 }, async t => {
  const dir = tmpDir('devfuse-release-idle')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  t.equal((await run(process.execPath, [CLI, 'create', store, '--size', '1G', '--segment-size', '16M'])).code, 0, 'created')
  const m = await run(process.execPath, [CLI, 'mount', store, mnt, '--transport', 'devfuse'], { env: { LOGDISK_FUSE_READERS: '0', LOGDISK_FUSE_RELEASE_MS: '20' } })
  t.equal(m.code, 0, `mounted: ${m.stderr}`)
  // A pause of 100 ms after every 24 MiB: the buffers of each burst lie idle for several
  // intervals and are given back, then the next burst reads into them again.
  const fio = await run('fio', ['--name=release', `--filename=${path.join(mnt, 'current.img')}`, '--size=192M', '--rw=randwrite', '--bsrange=64k-1m', '--bs_unaligned=0',
    '--iodepth=16', '--ioengine=libaio', '--direct=1', '--thinktime=100ms', '--thinktime_blocks=48', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--output-format=terse'])
  t.equal(fio.code, 0, `fio wrote and verified every block: ${fio.stderr.trim().split('\n').slice(-3).join(' | ')}`)
  t.equal((await logdisk('unmount', mnt)).code, 0, 'unmounted')
  const log = fs.readFileSync(path.join(store, 'daemon.log'), 'utf8').split('\n').filter(l => l.startsWith('{')).map(l => JSON.parse(l))
  const stats = log.find(l => l.msg === 'FUSE session statistics')!.stats
  t.ok(stats.reads.releasedMiB >= 16, `${Math.round(stats.reads.releasedMiB)} MiB of idle buffers given back`)
  const verify = await logdisk('verify', store)
  t.equal(verify.code, 0, `verify is clean: ${verify.stdout.trim().split('\n').pop()}`)
})
