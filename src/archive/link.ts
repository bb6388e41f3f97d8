import { LogdiskError } from '../errors'
import type { ArchiveLink } from '../store/archive-link'
import { decodeArchive, encodeArchive } from './codec'
import type { ArchiveTarget } from './target'

/** The name of archived segment `id` of store `storeUuid`: `<U>.seg-<N>.ldarch`. */
export function archiveObjectName (storeUuid: string, id: number): string {
  return `${storeUuid}.seg-${String(id).padStart(12, '0')}.ldarch`
}

/**
 * The store's ArchiveLink over a target: segment N of store U is the object
 * `<U>.seg-<N>.ldarch`, compressed and checksummed by the archive codec.
 */
export function archiveLink (target: ArchiveTarget, storeUuid: string): ArchiveLink {
  const name = (id: number): string => archiveObjectName(storeUuid, id)
  return {
    async put (id, data) {
      await target.put(name(id), await encodeArchive(data))
    },
    async get (id) {
      const data = await target.get(name(id))
      try {
        return await decodeArchive(data)
      } catch (err) {
        // The codec's message says what is wrong, not where: name the object and the segment.
        if (err instanceof LogdiskError) throw new LogdiskError(err.code, `${target.describe()}: ${name(id)} (segment ${id}): ${err.message}`, err)
        throw err
      }
    },
    async list () {
      const ids: number[] = []
      for (const n of await target.list(`${storeUuid}.seg-`)) {
        const m = /\.seg-(\d{12})\.ldarch$/.exec(n)
        if (m) ids.push(Number(m[1]))
      }
      return ids.sort((a, b) => a - b)
    },
    describe: () => target.describe()
  }
}
