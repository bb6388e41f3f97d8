import { LogdiskError } from '../errors'
import type { ArchiveLink } from '../store/archive-link'
import { ownerRecord, ownerVerdict, type Location, type OwnerRecord } from '../store/identity'
import type { StoreConfig } from '../store/config'
import { archiveLink } from './link'
import type { ArchiveTarget } from './target'

/**
 * The archive link of a store that writes: before its first put, the target's owner object
 * (`<uuid>.owner.json`) must name this store directory, or nothing (then it is claimed). A
 * copy of the store with the same uuid is refused there instead of overwriting the original's
 * archived segments.
 */
export function storeArchiveLink (target: ArchiveTarget, config: StoreConfig, here: Location): ArchiveLink {
  const link = archiveLink(target, config.uuid)
  const name = `${config.uuid}.owner.json`
  let checked: Promise<void> | undefined
  const check = async (): Promise<void> => {
    let owner: OwnerRecord | undefined
    if (await target.has(name)) {
      try { owner = JSON.parse((await target.get(name)).toString('utf8')) as OwnerRecord } catch { owner = undefined }
    }
    const verdict = ownerVerdict(owner, here, config.uuid)
    if (typeof verdict === 'object') {
      throw new LogdiskError('IDENTITY', `${target.describe()} holds the archive of the store at ${verdict.other}, which has this store's identity (${config.uuid}): one of the two is a copy of the other; give the copy its own identity with: logdisk adopt <copy> (nothing was archived)`)
    }
    if (verdict === 'mine' && owner?.path === here.path) return
    await target.put(name, Buffer.from(JSON.stringify(ownerRecord(config.uuid, here), null, 2) + '\n'))
  }
  return {
    ...link,
    async put (id, data) {
      checked ??= check().catch(err => { checked = undefined; throw err })
      await checked
      return link.put(id, data)
    }
  }
}
