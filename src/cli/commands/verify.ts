import type { Command } from 'commander'
import { LogdiskError } from '../../errors'
import type { VerifyReport } from '../../store'
import { runTracked } from '../progress'

export function register (program: Command): void {
  program.command('verify <store>')
    .description('check every entry\'s CRC and that the index agrees with the log')
    .option('--deep', 'same as the default for now: every block\'s data is checked')
    .option('--json', 'print the report as JSON')
    .action(async (storeArg: string, opts: { json?: boolean }) => {
      const report = await runTracked<VerifyReport>(storeArg, 'verify', {}, 'verifying')
      if (opts.json) console.log(JSON.stringify(report, null, 2))
      else {
        console.log(`${report.segments} segments, ${report.entries} entries, ${report.blocksChecked} blocks checked`)
        for (const p of report.problems) console.log(`problem: ${p}`)
      }
      if (!report.ok) throw new LogdiskError('CORRUPT', `verify found ${report.problemCount} problem(s) in ${storeArg}`)
      if (!opts.json) console.log('ok')
    })
}
