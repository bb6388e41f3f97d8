import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import type { Command } from 'commander'
import { LogdiskError } from '../../errors'
import type { SendResult } from '../../copy/send'
import { formatBytes } from '../units'
import { runTracked } from '../progress'
import { interruptedSignal } from '../interrupt'
import { INTERRUPTIBLE } from '../../ops/ops'

/**
 * `send --out -`: the op (run here, or by the mount daemon) connects to a unix socket that this
 * process listens on, in a private temp directory, and what arrives is copied to stdout. The
 * same path works whether or not the store is mounted.
 */
async function sendToStdout (storeArg: string, args: Record<string, unknown>): Promise<SendResult> {
  if (process.stdout.isTTY) throw new LogdiskError('BAD_ARGUMENT', 'refusing to write a binary stream to a terminal; pipe it (send ... --out - | logdisk receive ...) or give --out FILE')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-send-'))
  const socket = path.join(dir, 'stream.sock')
  let conn: net.Socket | undefined
  let stdoutError: Error | undefined
  const onStdoutError = (err: Error): void => { stdoutError = err; conn?.destroy() }
  process.stdout.on('error', onStdoutError)
  let delivered!: () => void
  const done = new Promise<void>(resolve => { delivered = resolve })
  const server = net.createServer(c => {
    if (conn) { c.destroy(); return } // one sender only
    conn = c
    c.on('error', () => undefined)
    c.pipe(process.stdout, { end: false })
    c.on('close', () => delivered())
  })
  await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(socket, resolve) })
  try {
    const r = await runTracked<SendResult>(storeArg, 'send', { ...args, socket }, 'sending')
    if (conn) await done
    if (stdoutError) {
      // Ctrl-C to the whole pipeline: the receiving end went with it (interrupt.ts).
      if (interruptedSignal() !== undefined) throw new LogdiskError('INTERRUPTED', `send interrupted; ${INTERRUPTIBLE.send({ out: '-' })}`, stdoutError)
      throw new LogdiskError('IO', `writing the stream to standard output failed: ${stdoutError.message}`)
    }
    return r
  } finally {
    conn?.destroy()
    server.close()
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

export function register (program: Command): void {
  program.command('send <store> <snapshot>')
    .description('write a stream of a snapshot (full), or of the blocks changed since --from (incremental), for logdisk receive')
    .requiredOption('--out <file|->', 'stream file to create, or - for standard output')
    .option('--from <snapshot>', 'an older snapshot: send only the blocks changed since it')
    .option('--force', 'overwrite --out if it exists')
    .option('--json', 'print the result as JSON (with --out FILE)')
    .action(async (storeArg: string, name: string, opts: { out: string, from?: string, force?: boolean, json?: boolean }) => {
      const args = { name, from: opts.from }
      if (opts.out === '-') {
        await sendToStdout(storeArg, args)
        return
      }
      const out = path.resolve(opts.out)
      const r = await runTracked<SendResult>(storeArg, 'send', { ...args, out, force: !!opts.force }, 'sending')
      if (opts.json) return console.log(JSON.stringify({ ...r, out }, null, 2))
      console.log(`sent ${r.from ? `the changes from ${r.from} to ${r.snapshot}` : `snapshot ${r.snapshot}`} to ${out}: ${r.dataBlocks} data blocks, ${r.zeroBlocks} zeroed blocks, ${formatBytes(r.bytes)}`)
    })
}
