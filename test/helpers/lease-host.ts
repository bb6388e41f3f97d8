// A "host" for the lease tests: a separate process that holds (or tries to hold) a replica's
// lease, driven by JSON lines on stdin, answering JSON lines on stdout. Started by
// test/helpers/lease-hosts.ts; the first line it prints is {"ready":true}.
//
// argv[2]: JSON { target: TargetSpec, host, storeUuid, name?, ttlMs?, skewMs? }
// commands: {op:"acquire", at?: epoch ms to start at, takeover?: boolean}
//           {op:"put", name, text} (through the lease's fenced target) | {op:"check"} |
//           {op:"renew"} | {op:"release"} | {op:"exit"}
// replies:  {ok:true, generation?, version?} or {ok:false, code, message}
import readline from 'node:readline'
import { DirTarget, Lease, S3Target, type ArchiveTarget } from '../../src/archive'
import { resolveS3Settings, type S3Settings } from '../../src/archive/s3'
import { LogdiskError } from '../../src/errors'

export type TargetSpec =
  | { kind: 'dir', dir: string }
  | { kind: 's3', bucket: string, prefix: string, settings: S3Settings, settleMs?: number }

export function makeTarget (spec: TargetSpec): ArchiveTarget {
  return spec.kind === 'dir'
    ? new DirTarget(spec.dir)
    : new S3Target(spec.bucket, spec.prefix, resolveS3Settings('test', spec.settings, {}), { settleMs: spec.settleMs })
}

async function main (): Promise<void> {
  const config = JSON.parse(process.argv[2]) as { target: TargetSpec, host: string, storeUuid: string, name?: string, ttlMs?: number, skewMs?: number }
  const target = makeTarget(config.target)
  let lease: Lease | undefined
  const reply = (x: object): void => { process.stdout.write(JSON.stringify(x) + '\n') }
  const fail = (err: unknown): void => {
    reply(err instanceof LogdiskError ? { ok: false, code: err.code, message: err.message } : { ok: false, code: 'ERROR', message: String(err) })
  }
  const lines = readline.createInterface({ input: process.stdin })
  reply({ ready: true })
  for await (const line of lines) {
    const cmd = JSON.parse(line) as { op: string, at?: number, takeover?: boolean, name?: string, text?: string }
    try {
      switch (cmd.op) {
        case 'acquire': {
          if (cmd.at !== undefined) await new Promise(resolve => setTimeout(resolve, Math.max(0, cmd.at! - Date.now())))
          lease = await Lease.acquire(target, {
            storeUuid: config.storeUuid, host: config.host, name: config.name, ttlMs: config.ttlMs, skewMs: config.skewMs, takeover: cmd.takeover
          })
          reply({ ok: true, generation: lease.generation, version: lease.current.version })
          break
        }
        case 'put':
          if (lease === undefined) throw new Error('no lease')
          await lease.fence().put(cmd.name!, Buffer.from(cmd.text!))
          reply({ ok: true })
          break
        case 'check':
        case 'renew':
          if (lease === undefined) throw new Error('no lease')
          reply({ ok: true, ...(cmd.op === 'check' ? await lease.check() : await lease.renew()) })
          break
        case 'release':
          if (lease === undefined) throw new Error('no lease')
          await lease.release()
          lease = undefined
          reply({ ok: true })
          break
        case 'exit':
          await target.close()
          reply({ ok: true })
          process.exit(0)
          break
        default:
          throw new Error(`unknown op ${cmd.op}`)
      }
    } catch (err) {
      fail(err)
    }
  }
}

if (require.main === module) {
  main().catch(err => {
    process.stderr.write(`lease-host: ${String((err as Error)?.stack ?? err)}\n`)
    process.exit(1)
  })
}
