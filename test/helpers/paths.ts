import fs from 'node:fs'
import path from 'node:path'

/**
 * The project root, found from this file whether it runs as TypeScript (test/helpers) or
 * compiled (dist/test/helpers, which is what `make test` runs): the nearest directory with
 * a package.json above it that is not dist's.
 */
function findRoot (from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'src'))) return dir
    if (path.dirname(dir) === dir) throw new Error(`no project root above ${from}`)
  }
}

export const ROOT = findRoot(__dirname)
/** Test fixtures stay in the source tree; tsc does not copy them to dist/. */
export const FIXTURES = path.join(ROOT, 'test', 'fixtures')
