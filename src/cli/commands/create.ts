import path from 'node:path'
import type { Command } from 'commander'
import { Store } from '../../store'
import { formatBytes, parseSize } from '../units'

export function register (program: Command): void {
  program.command('create <store>')
    .description('create a store: a directory holding one virtual disk')
    .requiredOption('--size <size>', 'volume size, like 8G')
    .option('--block-size <size>', 'block size', '4K')
    .option('--segment-size <size>', 'log segment size', '64M')
    .action(async (storeArg: string, opts: { size: string, blockSize: string, segmentSize: string }) => {
      const dir = path.resolve(storeArg)
      const config = await Store.create(dir, {
        sizeBytes: parseSize(opts.size, '--size'),
        blockBytes: parseSize(opts.blockSize, '--block-size'),
        segmentBytes: parseSize(opts.segmentSize, '--segment-size')
      })
      console.log(`created ${dir}: ${formatBytes(config.sizeBytes)}, block ${formatBytes(config.blockBytes)}, segment ${formatBytes(config.segmentBytes)}`)
    })
}
