import fs from 'node:fs'
import path from 'node:path'
import { crc32c, type SnapshotRecord, type Store } from '../store'

/**
 * The c2 content identities of a store's snapshots, remembered in a small file of the store
 * (`identities`, docs/FORMAT.md) so that an incremental send or receive derives the newer
 * end's identity from the older one's plus the changed blocks (block-set-hash.ts) instead of
 * walking every block.
 *
 * A snapshot's image never changes while the snapshot exists (its cut is a fixed point of
 * the log; compaction keeps what it sees; promote refuses while a clone has snapshots), so an
 * identity stays true for as long as the same snapshot exists in the same store at the same
 * geometry. Each entry names all of that: the store's uuid (a copy adopted or another store
 * never matches), the snapshot's name, cut seq, marker position and time, the volume and block
 * size (resize changes the identity). An entry is used only if the store's snapshot table
 * holds a record equal in every one of those fields; anything else, a file that fails its
 * CRC32C, cannot be parsed or is of another version, is ignored as if absent, and the
 * identity is derived or walked again. Only identities that were walked, derived or checked
 * against a stream are written.
 *
 * The file is a cache: losing it costs one walk. Read-only commands (send) write it too, on a
 * best-effort basis: a store the user may only read, or a full disk, just keeps no cache.
 * Written to a temporary file of the process (pid), synced, then renamed over the old one, so
 * concurrent writers never interleave; the last one wins, and an entry lost that way is
 * computed again.
 *
 * Layout: one line of JSON `{"version":1,"uuid":...,"entries":[...]}`, then one line with the
 * CRC32C of the first line's bytes in decimal.
 */

export const IDENTITY_FILE = 'identities'
const FILE_VERSION = 1
/** More entries than this are not kept (the newest cuts are). */
const MAX_ENTRIES = 4096

export interface IdentityEntry {
  name: string
  seq: number
  position: number
  timeMs: number
  sizeBytes: number
  blockBytes: number
  identity: string
}

/** The cached identities that are valid for the store's snapshots now, by cut seq. */
export function readIdentities (store: Store): Map<number, string> {
  const out = new Map<number, string>()
  let text: string
  try {
    text = fs.readFileSync(path.join(store.dir, IDENTITY_FILE), 'utf8')
  } catch {
    return out
  }
  const lines = text.split('\n')
  if (lines.length < 2 || String(crc32c(Buffer.from(lines[0], 'utf8'))) !== lines[1]) return out
  let body: { version?: unknown, uuid?: unknown, entries?: unknown }
  try {
    body = JSON.parse(lines[0])
  } catch {
    return out
  }
  if (body.version !== FILE_VERSION || body.uuid !== store.config.uuid || !Array.isArray(body.entries)) return out
  const bySeq = new Map(store.snapshots().map(s => [s.seq, s]))
  for (const e of body.entries as IdentityEntry[]) {
    const s = e && bySeq.get(e.seq)
    if (s && typeof e.identity === 'string' && matches(store, s, e)) out.set(s.seq, e.identity)
  }
  return out
}

function matches (store: Store, s: SnapshotRecord, e: IdentityEntry): boolean {
  return e.name === s.name && e.seq === s.seq && e.position === s.position && e.timeMs === s.timeMs &&
    e.sizeBytes === store.sizeBytes && e.blockBytes === store.blockBytes
}

/**
 * Remembers the identities of snapshots (by cut seq) beside the valid ones already kept.
 * `sizeBytes`: the volume size they were computed at (the caller reads it before computing
 * them): a resize meanwhile must not make them pass for identities at the new size, so they
 * are recorded at that size, and used only while the volume has it. Best effort: returns
 * whether the file was written.
 */
export async function rememberIdentities (store: Store, identities: Map<number, string>, sizeBytes: number): Promise<boolean> {
  const now = store.sizeBytes
  const all = readIdentities(store)
  let added = false
  for (const [seq, identity] of identities) {
    if (sizeBytes !== now) continue
    if (all.get(seq) !== identity) added = true
    all.set(seq, identity)
  }
  if (!added) return false
  const bySeq = new Map(store.snapshots().map(s => [s.seq, s]))
  const entries: IdentityEntry[] = []
  for (const [seq, identity] of [...all].sort((a, b) => b[0] - a[0]).slice(0, MAX_ENTRIES)) {
    const s = bySeq.get(seq)
    if (s) entries.push({ name: s.name, seq: s.seq, position: s.position, timeMs: s.timeMs, sizeBytes: now, blockBytes: store.blockBytes, identity })
  }
  const line = JSON.stringify({ version: FILE_VERSION, uuid: store.config.uuid, entries })
  const file = path.join(store.dir, IDENTITY_FILE)
  const tmp = `${file}.${process.pid}.tmp`
  try {
    const fh = await fs.promises.open(tmp, 'w')
    try {
      await fh.writeFile(`${line}\n${crc32c(Buffer.from(line, 'utf8'))}\n`)
      await fh.datasync()
    } finally {
      await fh.close()
    }
    await fs.promises.rename(tmp, file)
    return true
  } catch {
    await fs.promises.rm(tmp, { force: true }).catch(() => undefined)
    return false
  }
}
