import type { IndexDb } from '../../src/store/index-db'

/** Keys a test wrote into an index (made with `testKey`), as [name, value] rows, in key order. */
export async function testRows (db: IndexDb): Promise<Array<[string, Buffer]>> {
  const out: Array<[string, Buffer]> = []
  for await (const [k, v] of db.dump()) {
    const s = k.toString()
    if (s.startsWith(PREFIX)) out.push([s.slice(PREFIX.length), v])
  }
  return out
}

/** A key no index row of the store uses (keys.ts prefixes are single bytes), named `name`. */
export function testKey (name: string): Buffer {
  return Buffer.from(`${PREFIX}${name}`)
}

const PREFIX = 'zz-test-'
