import path from 'node:path'
import type { Command } from 'commander'
import { prepareStore } from '../store-access'

export function register (program: Command): void {
  program.command('adopt <store>')
    .description('give a store its own identity (a new uuid): what a copy (cp -a) needs before it is mounted or changed')
    .option('--json', 'print the result as JSON')
    .action(async (storeArg: string, opts: { json?: boolean }) => {
      const { dir } = prepareStore(storeArg, 'write', { adopting: true })
      // Progress lines only on a terminal: the summary line says what was done.
      const { adoptStore } = await import('../../ops/adopt') // loaded only for adopt: CLI start-up
      const r = await adoptStore(dir, line => { if (!opts.json && process.stderr.isTTY) process.stderr.write(`logdisk: ${line}\n`) })
      if (opts.json) return console.log(JSON.stringify(r, null, 2))
      const parts = [`${r.segmentsRewritten} segment header(s) rewritten`]
      if (r.segmentsCopiedIn > 0) parts.push(`${r.segmentsCopiedIn} segment(s) copied in from the original's pool volumes`)
      if (r.volumesRenamed.length > 0) parts.push(`pool volume(s) ${r.volumesRenamed.join(', ')} follow the new identity`)
      if (r.volumesDropped.length > 0) parts.push(`pool volume(s) ${r.volumesDropped.join(', ')} belong to the original and left this store's pool`)
      if (r.internalCapacityRestored) parts.push(`${path.join(dir, 'segments')} is its only pool volume now and takes new segments (add others with logdisk pool add)`)
      if (r.mirrorLowered) parts.push(`mirror lowered from ${r.mirrorLowered.from} to ${r.mirrorLowered.to}: its pool holds ${r.mirrorLowered.to} volume${r.mirrorLowered.to > 1 ? 's' : ''} now (add one with logdisk pool add, then logdisk policy set ${dir} mirror=${r.mirrorLowered.from})`)
      if (r.archivedCopied > 0) parts.push(`${r.archivedCopied} archived segment(s) copied under the new identity`)
      if (r.baseline) parts.push('baseline re-stamped')
      console.log(`adopted ${dir}${r.copyOf ? ` (a copy of ${r.copyOf})` : ''}: identity ${r.from} -> ${r.to}; ${parts.join('; ')}`)
    })
}
