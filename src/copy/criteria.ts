import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError } from '../errors'
import { readConfig, writeFileAtomic, type SnapshotRecord, type Store, type VolumeIdPolicy } from '../store'
import { changedPieces, snapshotPieces, writeImage, type WrittenImage } from './export'

/**
 * Snapshot criteria (002 Fig. 7-8): named recipes for a snapshot and a copy of it. Validated
 * data in <store>/criteria.json (atomic writes), like policy.json. executeSnapshot cuts a
 * snapshot by a criteria; copyByCriteria copies its block range to the criteria's target:
 * full (every block of the range) or partial (only blocks written since the criteria's
 * previous completed run, whose cut seq the criteria remembers).
 */
export interface Criteria {
  name: string
  /** First block of the range (002 Fig. 7 start block). */
  startBlock: number
  /** Last block of the range, inclusive; null = the volume's last block. */
  endBlock: number | null
  /** Full/Partial flag (002 [0090]). */
  mode: 'full' | 'partial'
  /** Background flag: the copy runs after the snapshot command returns. */
  background: boolean
  /** Target path pattern (absolute); placeholders {name} {snapshot} {seq} {time}. */
  target: string
  /** A filesystem mountpoint to fsfreeze around the cut (instead of only flushing). */
  freeze: string | null
  createdAt: string
  /** Snapshots cut by this criteria so far (names its snapshots <name>-<n>). */
  runs: number
  /** The newest completed copy: partial runs copy what changed since its seq. */
  lastRun: CriteriaRun | null
  /** The newest failed copy, if it came after lastRun. */
  lastError: { snapshot: string, seq: number, message: string, at: string } | null
}

export interface CriteriaRun {
  snapshot: string
  seq: number
  target: string
  mode: 'full' | 'partial'
  /** Partial runs: the seq they copied changes since (0 = everything). */
  baseSeq: number | null
  blocks: number
  writtenBytes: number
  finishedAt: string
}

interface CriteriaFile {
  format: number
  criteria: Criteria[]
}

export const CRITERIA_FILE = 'criteria.json'
const CRITERIA_FORMAT = 1
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/
const PLACEHOLDERS = ['name', 'snapshot', 'seq', 'time']

function file (dir: string): string {
  return path.join(dir, CRITERIA_FILE)
}

export function readCriteriaFile (dir: string): Criteria[] {
  const f = file(dir)
  if (!fs.existsSync(f)) return []
  let data: CriteriaFile
  try {
    data = JSON.parse(fs.readFileSync(f, 'utf8'))
  } catch (err) {
    throw new LogdiskError('BAD_CONFIG', `${f} is not valid JSON; fix it or remove it (it holds only the snapshot criteria)`, err)
  }
  if (!data || data.format !== CRITERIA_FORMAT || !Array.isArray(data.criteria)) {
    throw new LogdiskError('BAD_CONFIG', `${f} is not a criteria file of format ${CRITERIA_FORMAT}`)
  }
  return data.criteria
}

function writeCriteriaFile (dir: string, list: Criteria[]): void {
  const data: CriteriaFile = { format: CRITERIA_FORMAT, criteria: [...list].sort((a, b) => a.name.localeCompare(b.name)) }
  writeFileAtomic(file(dir), JSON.stringify(data, null, 2) + '\n')
}

export function getCriteria (dir: string, name: string): Criteria {
  const c = readCriteriaFile(dir).find(x => x.name === name)
  if (!c) throw new LogdiskError('NOT_FOUND', `no snapshot criteria named "${name}" (logdisk criteria list <store> lists them)`)
  return c
}

/** Read, change one criteria, write: a short synchronous step, so no interleaving in-process. */
function updateCriteria (dir: string, name: string, fn: (c: Criteria) => void): Criteria {
  const list = readCriteriaFile(dir)
  const c = list.find(x => x.name === name)
  if (!c) throw new LogdiskError('NOT_FOUND', `no snapshot criteria named "${name}"`)
  fn(c)
  writeCriteriaFile(dir, list)
  return c
}

export interface CriteriaSpec {
  name: string
  target: string
  startBlock?: number
  endBlock?: number | null
  mode?: 'full' | 'partial'
  background?: boolean
  freeze?: string | null
}

/** createCriteria (002 Fig. 8): validates against the store's geometry; refuses a duplicate. */
export function createCriteria (dir: string, spec: CriteriaSpec): Criteria {
  const config = readConfig(dir)
  const blocks = config.sizeBytes / config.blockBytes
  if (!NAME.test(spec.name)) throw new LogdiskError('BAD_ARGUMENT', `criteria name "${spec.name}" must be 1-64 letters, digits, dot, dash or underscore`)
  const startBlock = spec.startBlock ?? 0
  const endBlock = spec.endBlock ?? null
  if (!Number.isSafeInteger(startBlock) || startBlock < 0 || startBlock >= blocks) {
    throw new LogdiskError('BAD_ARGUMENT', `--start-block ${startBlock} must be a block of the volume (0 to ${blocks - 1})`)
  }
  if (endBlock !== null && (!Number.isSafeInteger(endBlock) || endBlock < startBlock || endBlock >= blocks)) {
    throw new LogdiskError('BAD_ARGUMENT', `--end-block ${endBlock} must be from the start block ${startBlock} to the volume's last block ${blocks - 1}`)
  }
  const mode = spec.mode ?? 'full'
  if (mode !== 'full' && mode !== 'partial') throw new LogdiskError('BAD_ARGUMENT', `mode ${String(mode)} must be full or partial`)
  if (!path.isAbsolute(spec.target)) throw new LogdiskError('BAD_ARGUMENT', `--target ${spec.target} must be an absolute path pattern`)
  for (const m of spec.target.matchAll(/\{([^}]*)\}/g)) {
    if (!PLACEHOLDERS.includes(m[1])) throw new LogdiskError('BAD_ARGUMENT', `--target has an unknown placeholder {${m[1]}}; use ${PLACEHOLDERS.map(p => `{${p}}`).join(' ')}`)
  }
  if (!fs.existsSync(path.dirname(spec.target.replace(/\{[^}]*\}.*$/, 'x')))) {
    throw new LogdiskError('NOT_FOUND', `the directory of --target ${spec.target} does not exist`)
  }
  if (spec.freeze != null && !path.isAbsolute(spec.freeze)) throw new LogdiskError('BAD_ARGUMENT', `--freeze ${spec.freeze} must be an absolute path`)
  const list = readCriteriaFile(dir)
  if (list.some(c => c.name === spec.name)) throw new LogdiskError('BAD_ARGUMENT', `criteria "${spec.name}" already exists; delete it first to change it`)
  const c: Criteria = {
    name: spec.name,
    startBlock,
    endBlock,
    mode,
    background: spec.background ?? false,
    target: spec.target,
    freeze: spec.freeze ?? null,
    createdAt: new Date().toISOString(),
    runs: 0,
    lastRun: null,
    lastError: null
  }
  writeCriteriaFile(dir, [...list, c])
  return c
}

/** deleteCriteria (002 Fig. 8). Snapshots and copies it made stay. */
export function deleteCriteria (dir: string, name: string): Criteria {
  const list = readCriteriaFile(dir)
  const c = list.find(x => x.name === name)
  if (!c) throw new LogdiskError('NOT_FOUND', `no snapshot criteria named "${name}"`)
  writeCriteriaFile(dir, list.filter(x => x !== c))
  return c
}

function compactTime (ms: number): string {
  return new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')
}

/** The target path of a run: {name} criteria, {snapshot} snapshot, {seq} its cut, {time} its cut time (UTC, 20260102T030405Z). */
export function expandTarget (c: Criteria, snap: Pick<SnapshotRecord, 'name' | 'seq' | 'timeMs'>): string {
  const values: Record<string, string> = { name: c.name, snapshot: snap.name, seq: String(snap.seq), time: compactTime(snap.timeMs) }
  return c.target.replace(/\{([a-z]+)\}/g, (_, k: string) => values[k])
}

function isBlockDevice (p: string): boolean {
  try {
    return fs.statSync(p).isBlockDevice()
  } catch {
    return false
  }
}

/**
 * executeSnapshot (002 Fig. 8), its cut: flushes, cuts a snapshot named <criteria>-<n> (or
 * `name`), counts the run. The copy is copyByCriteria's: the caller runs it now or in the
 * background. Refuses before cutting when the target would exist.
 */
export async function cutByCriteria (
  store: Store, criteria: string, opts: { name?: string, id?: number, frozen?: boolean, idPolicy?: VolumeIdPolicy } = {}
): Promise<{ snapshot: SnapshotRecord, target: string, criteria: Criteria }> {
  const c = getCriteria(store.dir, criteria)
  const blocks = store.sizeBytes / store.blockBytes
  if (c.startBlock >= blocks || (c.endBlock ?? 0) >= blocks) throw new LogdiskError('BAD_ARGUMENT', `criteria ${c.name}'s block range is past the volume's end`)
  let name = opts.name
  if (name === undefined) {
    const names = new Set(store.snapshots().map(s => s.name))
    let n = c.runs + 1
    while (names.has(`${c.name}-${n}`)) n++
    name = `${c.name}-${n}`
  }
  const planned = expandTarget(c, { name, seq: 0, timeMs: Date.now() })
  if (!/\{(seq|time)\}/.test(c.target) && fs.existsSync(planned) && !isBlockDevice(planned)) {
    throw new LogdiskError('BAD_ARGUMENT', `criteria ${c.name}'s target ${planned} exists; move it away or use {snapshot}, {seq} or {time} in the target`)
  }
  await store.flush()
  const snapshot = await store.snapshot({ name, id: opts.id, frozen: opts.frozen ?? false, idPolicy: opts.idPolicy })
  const updated = updateCriteria(store.dir, c.name, x => { x.runs++ })
  return { snapshot, target: expandTarget(c, snapshot), criteria: updated }
}

export interface CopyResult extends WrittenImage {
  criteria: string
  snapshot: string
  seq: number
  mode: 'full' | 'partial'
  baseSeq: number | null
  /** Blocks copied (partial: the changed blocks of the range). */
  blocks: number
  /** Partial copies: the sidecar file listing the ranges. */
  sidecar?: string
}

/**
 * The copy step of executeSnapshot: writes blocks [startBlock, endBlock] of the snapshot to
 * the criteria's target (writeImage: sparse file under a temp name and renamed, or a block
 * device in place). A partial copy writes only the blocks written since the criteria's last
 * completed run (all written blocks on the first run) and a sidecar <target>.json listing them
 * (docs/STREAM.md). Records the run (or the failure) in criteria.json.
 */
export async function copyByCriteria (
  store: Store, criteria: string, snapshotName: string,
  opts: { onProgress?: (done: number, total: number) => void, faults?: ReadonlySet<string> } = {}
): Promise<CopyResult> {
  const c = getCriteria(store.dir, criteria)
  const snap = store.snapshotNamed(snapshotName)
  // No shrink while the copy reads the range it took from the size now (a shrink meanwhile
  // failed the copy with "bad block range": helper-86 D7).
  const release = store.holdSize(`criteria ${c.name} copies snapshot ${snap.name}`, true)
  try {
    const B = store.blockBytes
    const last = (c.endBlock ?? store.sizeBytes / B - 1)
    const count = last - c.startBlock + 1
    const target = expandTarget(c, snap)
    let result: CopyResult
    if (c.mode === 'full') {
      const w = await writeImage(target, count * B, snapshotPieces(store, snap.name, c.startBlock, count), {
        blockBytes: B, faults: opts.faults, faultLabel: 'criteria-copy', onProgress: opts.onProgress
      })
      result = { ...w, criteria: c.name, snapshot: snap.name, seq: snap.seq, mode: 'full', baseSeq: null, blocks: count }
    } else {
      const baseSeq = c.lastRun && c.lastRun.seq < snap.seq ? c.lastRun.seq : 0
      const base = c.lastRun && c.lastRun.seq < snap.seq ? c.lastRun.snapshot : null
      const ranges: Array<[number, number]> = []
      const w = await writeImage(target, count * B, changedPieces(store, snap.name, baseSeq, c.startBlock, count, ranges), {
        blockBytes: B, faults: opts.faults, faultLabel: 'criteria-copy', onProgress: opts.onProgress
      })
      const blocks = ranges.reduce((n, r) => n + r[1], 0)
      const sidecar = `${target}.json`
      if (!w.device) {
        writeFileAtomic(sidecar, JSON.stringify({
          format: 1,
          kind: 'logdisk-partial-copy',
          criteria: c.name,
          snapshot: snap.name,
          seq: snap.seq,
          time: new Date(snap.timeMs).toISOString(),
          base: base === null ? null : { snapshot: base, seq: baseSeq },
          blockBytes: B,
          startBlock: c.startBlock,
          endBlock: last,
          blocks,
          ranges
        }, null, 2) + '\n')
      }
      result = { ...w, criteria: c.name, snapshot: snap.name, seq: snap.seq, mode: 'partial', baseSeq, blocks, ...(w.device ? {} : { sidecar }) }
    }
    updateCriteria(store.dir, c.name, x => {
      if (!x.lastRun || x.lastRun.seq < snap.seq) {
        x.lastRun = { snapshot: snap.name, seq: snap.seq, target: result.out, mode: result.mode, baseSeq: result.baseSeq, blocks: result.blocks, writtenBytes: result.writtenBytes, finishedAt: new Date().toISOString() }
      }
      if (x.lastError && x.lastError.seq <= snap.seq) x.lastError = null
    })
    return result
  } catch (err) {
    try {
      updateCriteria(store.dir, c.name, x => { x.lastError = { snapshot: snap.name, seq: snap.seq, message: (err as Error).message, at: new Date().toISOString() } })
    } catch { /* the criteria was deleted meanwhile: nothing to record */ }
    throw err
  } finally {
    release()
  }
}
