import path from 'node:path'
import type { Command } from 'commander'
import { Store } from '../../store'
import { openStore } from '../../pool/open-store'
import { formatBytes, parseSize } from '../units'

export function register (program: Command): void {
  program.command('create <store>')
    .description('create a store: a directory holding one virtual disk')
    .requiredOption('--size <size>', 'volume size, like 8G')
    .option('--block-size <size>', 'block size', '4K')
    .option('--segment-size <size>', 'log segment size', '64M')
    .option('--pool <dir>', 'a pool volume directory for segments (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .action(async (storeArg: string, opts: { size: string, blockSize: string, segmentSize: string, pool: string[] }) => {
      const dir = path.resolve(storeArg)
      const config = await Store.create(dir, {
        sizeBytes: parseSize(opts.size, '--size'),
        blockBytes: parseSize(opts.blockSize, '--block-size'),
        segmentBytes: parseSize(opts.segmentSize, '--segment-size')
      })
      if (opts.pool.length > 0) {
        const { store } = await openStore(dir, { holder: 'logdisk create' }, opts.pool.map(p => path.resolve(p)))
        await store.close()
      }
      console.log(`created ${dir}: ${formatBytes(config.sizeBytes)}, block ${formatBytes(config.blockBytes)}, segment ${formatBytes(config.segmentBytes)}`)
    })
}
