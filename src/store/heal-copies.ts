import type { FileHandle } from './file-layer'
import { scanCopy } from './scanner'

/** One copy of a sealed segment, open for writing. */
export interface CopyToHeal {
  volume: string
  handle: FileHandle
}

/**
 * Heals the copies of one sealed mirrored segment whose blocks fail their checksums, block by
 * block, from a copy that holds the same block intact: copies of a sealed segment are byte for
 * byte alike (the same appends, the same free headers), so a block lies at the same offset in
 * each. With every copy damaged in some block, `pool repair` copied one damaged copy over the
 * other and a drain moved one as it was, both saying nothing (helper-61); one bit flip in
 * each copy, in different blocks, lost data a merge of the two still held.
 *
 * Only damage to block data heals: a copy whose entries end early or are torn (a damaged
 * entry header) cannot be lined up with the others, and nothing is written. A block is
 * written only with bytes that pass its CRC (the scan checked them), over bytes that fail
 * it, so a crash in the middle leaves each block bad or good as before; each healed copy is
 * fdatasync'd. Returns how many blocks were healed and how many fail in every copy.
 */
export async function healCopies (copies: CopyToHeal[], blockBytes: number): Promise<{ healed: number, unhealable: number }> {
  const scans: Array<{ bad: Set<number>, end: number | undefined }> = []
  for (const c of copies) {
    const scan = await scanCopy(c.handle, blockBytes)
    // Lined up only where its entries end cleanly: a torn or unread one cannot be.
    scans.push({ bad: new Set(scan.bad.map(b => b.at)), end: scan.torn === undefined && scan.error === undefined ? scan.end : undefined })
  }
  const allBad = new Set(scans.flatMap(s => [...s.bad]))
  const aligned = scans.every(s => s.end !== undefined && s.end === scans[0].end)
  if (!aligned) return { healed: 0, unhealable: allBad.size }
  let healed = 0
  let unhealable = 0
  const written = new Set<number>()
  const failed = new Set<number>()
  const buf = Buffer.allocUnsafe(blockBytes)
  for (const at of allBad) {
    const good = scans.findIndex(s => !s.bad.has(at))
    if (good < 0) { unhealable++; continue }
    const n = await copies[good].handle.read(buf, 0, blockBytes, at)
    if (n !== blockBytes) { unhealable++; continue }
    let wrote = false
    for (let c = 0; c < copies.length; c++) {
      if (!scans[c].bad.has(at) || failed.has(c)) continue
      try {
        await copies[c].handle.writev([Buffer.from(buf)], at)
        written.add(c)
        wrote = true
      } catch {
        // A copy that takes no write (its volume read-only) stays as it is: judged again
        // after, it is replaced from a healed one like any damaged copy.
        failed.add(c)
      }
    }
    if (wrote) healed++
  }
  for (const c of written) await copies[c].handle.datasync().catch(() => undefined)
  return { healed, unhealable }
}
