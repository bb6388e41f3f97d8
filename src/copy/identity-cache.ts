import fs from 'node:fs'
import os from 'node:os'
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
 * The file is a cache: losing it costs one walk. A store open for writing (receive, the mount
 * daemon's send) keeps it in the store; a read-only open (a send run directly) writes nothing
 * in the store (CLI.md), so it keeps the same file, named by the store's uuid, in a cache
 * directory of the user outside every store (userIdentityFile: $LOGDISK_CACHE_DIR, else
 * $XDG_CACHE_HOME/logdisk, else ~/.cache/logdisk). Both are read, their valid entries merged:
 * an entry is checked against the store's snapshot table whichever file it comes from. Best
 * effort: a store or home the user may not write, or a full disk, just keeps no cache.
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

/**
 * The per-user file of a store's identities remembered by read-only opens (a send run
 * directly), outside the store: `<cache dir>/identities-<uuid>`. Undefined when no cache
 * directory can be named (no home directory).
 */
export function userIdentityFile (uuid: string): string | undefined {
  const env = process.env
  let home: string | undefined
  try { home = os.homedir() } catch { home = undefined }
  const dir = env.LOGDISK_CACHE_DIR || (env.XDG_CACHE_HOME ? path.join(env.XDG_CACHE_HOME, 'logdisk') : home ? path.join(home, '.cache', 'logdisk') : undefined)
  return dir === undefined ? undefined : path.join(path.resolve(dir), `${IDENTITY_FILE}-${uuid}`)
}

/**
 * The cached identities that are valid for the store's snapshots now, by cut seq: those of
 * the store's file, and those a read-only open remembered in the user's (the store's win).
 */
export function readIdentities (store: Store): Map<number, string> {
  const user = userIdentityFile(store.config.uuid)
  const out = user === undefined ? new Map<number, string>() : readIdentityFile(store, user)
  for (const [seq, identity] of readIdentityFile(store, path.join(store.dir, IDENTITY_FILE))) out.set(seq, identity)
  return out
}

function readIdentityFile (store: Store, file: string): Map<number, string> {
  const out = new Map<number, string>()
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
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
 * are recorded at that size, and used only while the volume has it. In the store's file when
 * the store is open for writing, else in the user's (userIdentityFile). Best effort: returns
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
  const file = store.readOnly ? userIdentityFile(store.config.uuid) : path.join(store.dir, IDENTITY_FILE)
  if (file === undefined) return false
  const tmp = `${file}.${process.pid}.tmp`
  try {
    if (store.readOnly) await fs.promises.mkdir(path.dirname(file), { recursive: true, mode: 0o700 })
    const fh = await fs.promises.open(tmp, 'w', 0o600)
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
