/**
 * The newest-location map: block number -> (log position of its data, CRC32C of the data,
 * sequence number of that version).
 *
 * An open-addressing hash table with linear probing over four typed arrays, 28 bytes per
 * slot and at most 70% full: about 40 bytes per written block, no JS object per block, so a
 * 1 TiB sparse volume with 10 GiB written (2.6 M blocks) needs about 105 MiB wherever the
 * writes fell. The sequence number decides which version is newest when compaction moves an
 * old version to the head of the log, and answers "is the newest version older than this
 * snapshot's cut" without asking the index. Reads on the FUSE hot path look blocks up here and never wait on LevelDB.
 *
 * Dense layout (issue 11, the daemon's peak RSS). Once the volume's size is known
 * (setVolumeBlocks) and the hash table would grow to as many bytes as an array indexed by the
 * block number itself (20 bytes a block of the volume: no keys, no load factor), the map
 * takes that layout instead: for the bench's 2 GiB image 10 MiB where the table was 28 MiB
 * (and 14 + 28 MiB alive at once while it doubled). Its `positions` hold position + 1, so
 * that 0 (the arrays' fresh, untouched pages) means not mapped. A set past the volume's end
 * (none is expected: the store checks ranges) turns the map back into a hash table.
 */
import { TRIMMED } from './format'

const EMPTY = -1
const MAX_LOAD = 0.7
/** A trimmed block's row in the dense layout: TRIMMED (format.ts) + 1. */
const TRIMMED_ROW = -1
/** Bytes of one slot of the hash table (keys, positions, seqs: f64; crcs: u32). */
export const HASH_SLOT_BYTES = 28
/** Bytes of one block of the dense layout (positions, seqs: f64; crcs: u32). */
export const DENSE_ROW_BYTES = 20

/**
 * The arrays of a BlockMap as they are (block-map-file.ts saves and loads them whole). A hash
 * table has `keys`; the dense layout has none (row = block number; positions hold position + 1,
 * 0 for a block not mapped).
 */
export interface BlockMapTables {
  keys?: Float64Array
  positions: Float64Array
  crcs: Uint32Array
  seqs: Float64Array
}

/** Slots of the smallest hash table that holds `blocks` within the load bound. */
function hashSlotsFor (blocks: number): number {
  let slots = 16
  while (blocks > MAX_LOAD * slots) slots *= 2
  return slots
}

export class BlockMap {
  /** Undefined in the dense layout. */
  private keys: Float64Array | undefined
  private positions: Float64Array
  private crcs: Uint32Array
  private seqs: Float64Array
  private mask: number
  /** Blocks of the volume (setVolumeBlocks), 0 while unknown: the dense layout's rows. */
  private volumeBlocks = 0
  private used = 0
  /** Blocks whose newest version is a trim (position TRIMMED): they read as zeros. */
  private trimmedBlocks = 0
  /** Bumped whenever a block is added or removed: the sorted list below is of one such state. */
  private keysVersion = 0
  /** Bumped whenever rows move between slots: grow, delete, adopt. */
  private layoutVersion = 0
  /** The last sortedBlocks() result while the set of blocks is unchanged; the GC may drop it. */
  private sorted: { version: number, blocks: WeakRef<Float64Array | Uint32Array> } | undefined
  /** Blocks set or deleted since trackChanges(), while there are at most `limit` of them. */
  private tracked: { mark: unknown, blocks: Set<number>, limit: number } | undefined
  /**
   * Set while the table waits to be read (defer()): its counts are known, its rows are not.
   * Every method that reads or changes rows throws meanwhile (a bug: the caller should have
   * awaited loaded()), so a deferred map can never answer "not mapped" for a block it holds.
   */
  private pending: { count: number, trimmed: number, memoryBytes: number, load: () => Promise<BlockMap>, release: () => Promise<void>, loading?: Promise<void> } | undefined

  constructor (initialSlots = 1024) {
    let slots = 16
    while (slots < initialSlots) slots *= 2
    this.keys = new Float64Array(slots).fill(EMPTY)
    this.positions = new Float64Array(slots)
    this.crcs = new Uint32Array(slots)
    this.seqs = new Float64Array(slots)
    this.mask = slots - 1
  }

  /** Number of blocks mapped. */
  get count (): number {
    return this.pending?.count ?? this.used
  }

  /** Blocks whose newest version is a trim. */
  get trimmed (): number {
    return this.pending?.trimmed ?? this.trimmedBlocks
  }

  /** Bytes held by the table's arrays (once loaded, for a deferred map). */
  get memoryBytes (): number {
    return this.pending?.memoryBytes ?? (this.keys?.byteLength ?? 0) + this.positions.byteLength + this.crcs.byteLength + this.seqs.byteLength
  }

  /** Whether the map is in the dense layout (row = block number). */
  get isDense (): boolean {
    return this.keys === undefined
  }

  /**
   * Tells the map the volume's size in blocks (at open, and after a resize): from then on it
   * takes the dense layout whenever that is no bigger than the hash table it would need. A
   * dense map of another size is laid out again (in whichever layout is smaller; a hash table
   * if a block it holds is past the new end).
   */
  setVolumeBlocks (blocks: number): void {
    if (!Number.isSafeInteger(blocks) || blocks < 0) throw new Error(`bad volume size of ${blocks} blocks`)
    if (blocks === this.volumeBlocks) return
    this.volumeBlocks = blocks
    if (this.pending) return // laid out as read, once loaded()
    if (this.keys === undefined) {
      // Dense of another size: a block past the new end, or a smaller hash table, means a hash table.
      let past = false
      for (let b = blocks; b < this.positions.length && !past; b++) past = this.positions[b] !== 0
      if (past || hashSlotsFor(this.used) * HASH_SLOT_BYTES < blocks * DENSE_ROW_BYTES) this.toHash(hashSlotsFor(this.used))
      else this.toDense()
    } else {
      this.maybeDense(this.keys.length)
    }
  }

  /** Takes the dense layout if it is no bigger than a hash table of `slots` slots (and holds every block). */
  private maybeDense (slots: number): boolean {
    const n = this.volumeBlocks
    if (n === 0 || n * DENSE_ROW_BYTES > slots * HASH_SLOT_BYTES) return false
    const keys = this.keys
    if (keys) for (let i = 0; i < keys.length; i++) if (keys[i] >= n) return false
    this.toDense()
    return true
  }

  /** Lays the rows out densely over volumeBlocks rows (from either layout). */
  private toDense (): void {
    const n = this.volumeBlocks
    const positions = new Float64Array(n)
    const crcs = new Uint32Array(n)
    const seqs = new Float64Array(n)
    this.forEach((block, position, crc, seq) => {
      positions[block] = position + 1
      crcs[block] = crc
      seqs[block] = seq
    })
    this.keys = undefined
    this.positions = positions
    this.crcs = crcs
    this.seqs = seqs
    this.mask = n - 1 // unused in this layout
    this.layoutVersion++
  }

  /** Lays the rows out as a hash table of `slots` slots (from either layout). */
  private toHash (slots: number): void {
    const old = { keys: this.keys, positions: this.positions, crcs: this.crcs, seqs: this.seqs }
    this.keys = new Float64Array(slots).fill(EMPTY)
    this.positions = new Float64Array(slots)
    this.crcs = new Uint32Array(slots)
    this.seqs = new Float64Array(slots)
    this.mask = slots - 1
    this.layoutVersion++
    const put = (block: number, position: number, crc: number, seq: number): void => {
      const slot = this.slotOf(block)
      this.keys![slot] = block
      this.positions[slot] = position
      this.crcs[slot] = crc
      this.seqs[slot] = seq
    }
    if (old.keys) {
      for (let i = 0; i < old.keys.length; i++) if (old.keys[i] !== EMPTY) put(old.keys[i], old.positions[i], old.crcs[i], old.seqs[i])
    } else {
      for (let b = 0; b < old.positions.length; b++) if (old.positions[b] !== 0) put(b, old.positions[b] - 1, old.crcs[b], old.seqs[b])
    }
  }

  /**
   * Defers the table (a read-only open of a store with a saved map, block-map-file.ts): until
   * loaded() runs `load`, the map knows only its counts and size. A command that touches few
   * blocks (diff, status, an incremental send) then never reads the tens of MiB of the table,
   * whose first touch of fresh memory was most of an open's time.
   */
  defer (counts: { count: number, trimmed: number, memoryBytes: number }, load: () => Promise<BlockMap>, release: () => Promise<void>): void {
    this.assertLoaded()
    if (this.used !== 0) throw new Error('only an empty block map can be deferred')
    this.pending = { ...counts, load, release }
  }

  /** Lets go of what a deferred table that was never loaded holds (its open file): the store closes. */
  async releaseDeferred (): Promise<void> {
    const p = this.pending
    if (p && !p.loading) await p.release()
  }

  /** Whether the rows are in memory (not deferred, or loaded since). */
  get isLoaded (): boolean {
    return this.pending === undefined
  }

  /** Reads a deferred table (once, however many callers wait); resolves at once when loaded. */
  loaded (): Promise<void> {
    const p = this.pending
    if (!p) return Promise.resolve()
    p.loading ??= p.load().then(fresh => {
      // Taken over whole once read: no caller ever sees a half-loaded table.
      fresh.assertLoaded()
      this.keys = fresh.keys
      this.positions = fresh.positions
      this.crcs = fresh.crcs
      this.seqs = fresh.seqs
      this.mask = fresh.mask
      this.used = fresh.used
      this.trimmedBlocks = fresh.trimmedBlocks
      this.keysVersion++
      this.layoutVersion++
      this.pending = undefined
      this.layOutForVolume()
    })
    return p.loading
  }

  private assertLoaded (): void {
    if (this.pending) throw new Error('block map used before its deferred table was loaded (await map.loaded() first)')
  }

  /** After a table was taken whole (loaded, adopt): the layout setVolumeBlocks would choose. */
  private layOutForVolume (): void {
    const n = this.volumeBlocks
    if (n === 0) return
    this.volumeBlocks = 0
    this.setVolumeBlocks(n)
  }

  /** Hash layout only. */
  private slotOf (block: number): number {
    this.assertLoaded()
    const keys = this.keys!
    let slot = this.homeOf(block)
    while (keys[slot] !== EMPTY && keys[slot] !== block) slot = (slot + 1) & this.mask
    return slot
  }

  /** Dense layout: the row of `block`, or -1 past the end or not a block number (not mapped). */
  private rowOf (block: number): number {
    this.assertLoaded()
    return block < this.positions.length && block >= 0 && Number.isInteger(block) ? block : -1
  }

  /** Home slot: a hash mixing both 32-bit halves so that blocks 2^k apart do not collide. */
  private homeOf (block: number): number {
    return this.homeIn(block, this.mask)
  }

  private homeIn (block: number, mask: number): number {
    const lo = block >>> 0
    const hi = Math.floor(block / 0x100000000) >>> 0
    let h = Math.imul(lo ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b)
    h ^= h >>> 13
    h = Math.imul(h, 0xc2b2ae35)
    h ^= h >>> 16
    return h & mask
  }

  /** Log position of the block's newest data, -1 when the block was never written, TRIMMED (-2) when its newest version is a trim. */
  position (block: number): number {
    if (this.keys === undefined) {
      const row = this.rowOf(block)
      return row < 0 || this.positions[row] === 0 ? -1 : this.positions[row] - 1
    }
    const slot = this.slotOf(block)
    return this.keys[slot] === EMPTY ? -1 : this.positions[slot]
  }

  /** CRC32C of the block's newest data; only meaningful when position() >= 0. */
  crc (block: number): number {
    if (this.keys === undefined) {
      const row = this.rowOf(block)
      return row < 0 ? 0 : this.crcs[row]
    }
    const slot = this.slotOf(block)
    return this.crcs[slot]
  }

  /** Sequence number of the block's newest version; only meaningful when position() >= 0. */
  seq (block: number): number {
    if (this.keys === undefined) {
      const row = this.rowOf(block)
      return row < 0 ? 0 : this.seqs[row]
    }
    return this.seqs[this.slotOf(block)]
  }

  /**
   * Records a version of a block unless the map already holds a newer one (by sequence
   * number): replaying a moved old version never hides the newest.
   */
  set (block: number, position: number, crc: number, seq: number): void {
    // A trimmed version's index row names its holder in the CRC field (format.ts trimHolder):
    // the map only reads, so it keeps none (a map made from the index equals one made by writes).
    if (position === TRIMMED) crc = 0
    if (this.tracked) this.track(block)
    if (this.keys === undefined) {
      const row = this.rowOf(block)
      // Past the end, or a position the encoding cannot hold (-1 is "not mapped"): a hash table.
      if (row < 0 || position === -1) this.toHash(hashSlotsFor(this.used + 1))
      else {
        const was = this.positions[row]
        if (was === 0) {
          this.used++
          this.keysVersion++
        } else if (this.seqs[row] > seq) return
        else if (was < 0) this.trimmedBlocks--
        if (position < 0) this.trimmedBlocks++
        this.positions[row] = position + 1
        this.crcs[row] = crc
        this.seqs[row] = seq
        return
      }
    }
    const keys = this.keys!
    let slot = this.slotOf(block)
    if (keys[slot] === EMPTY) {
      if ((this.used + 1) > MAX_LOAD * (this.mask + 1)) {
        this.grow()
        if (this.keys === undefined) {
          this.set(block, position, crc, seq)
          return
        }
        slot = this.slotOf(block)
      }
      this.keys![slot] = block
      this.used++
      this.keysVersion++
    }
    else if (this.seqs[slot] > seq) return
    else if (this.positions[slot] < 0) this.trimmedBlocks--
    if (position < 0) this.trimmedBlocks++
    this.positions[slot] = position
    this.crcs[slot] = crc
    this.seqs[slot] = seq
  }

  /** Removes a block (it reads as zeros again). Backward-shift deletion keeps probes short. */
  delete (block: number): boolean {
    if (this.tracked) this.track(block)
    if (this.keys === undefined) {
      // Rows never move in the dense layout: the layout version stays.
      const row = this.rowOf(block)
      if (row < 0 || this.positions[row] === 0) return false
      this.used--
      this.keysVersion++
      if (this.positions[row] < 0) this.trimmedBlocks--
      this.positions[row] = 0
      this.crcs[row] = 0
      this.seqs[row] = 0
      return true
    }
    const keys = this.keys
    let slot = this.slotOf(block)
    if (keys[slot] === EMPTY) return false
    this.used--
    this.keysVersion++
    this.layoutVersion++
    if (this.positions[slot] < 0) this.trimmedBlocks--
    let next = (slot + 1) & this.mask
    while (keys[next] !== EMPTY) {
      const key = keys[next]
      const home = this.homeOf(key)
      // Move `next` into the hole when its home slot is not between the hole and `next`.
      if (((next - home) & this.mask) >= ((next - slot) & this.mask)) {
        keys[slot] = key
        this.positions[slot] = this.positions[next]
        this.crcs[slot] = this.crcs[next]
        this.seqs[slot] = this.seqs[next]
        slot = next
      }
      next = (next + 1) & this.mask
    }
    keys[slot] = EMPTY
    return true
  }

  /**
   * Starts recording which blocks change (set or delete) from now on, beside `initial` ones,
   * under an opaque `mark` (what the map was then: block-map-file.ts saves only the changes
   * since a saved map it loaded). Past `limit` blocks it stops: saving them all is cheaper.
   */
  trackChanges (mark: unknown, limit: number, initial: Iterable<number> = []): void {
    this.assertLoaded()
    this.tracked = { mark, blocks: new Set(initial), limit }
    if (this.tracked.blocks.size > limit) this.tracked = undefined
  }

  /** The blocks changed since trackChanges(mark), or undefined if not tracked or too many. */
  changesSince (): { mark: unknown, blocks: Set<number> } | undefined {
    return this.tracked && { mark: this.tracked.mark, blocks: this.tracked.blocks }
  }

  private track (block: number): void {
    const t = this.tracked!
    t.blocks.add(block)
    if (t.blocks.size > t.limit) this.tracked = undefined
  }

  /** The table's arrays, not copies: for saving the map (they must not be changed). */
  tables (): BlockMapTables {
    this.assertLoaded()
    return { keys: this.keys, positions: this.positions, crcs: this.crcs, seqs: this.seqs }
  }

  /**
   * Takes over saved arrays (from tables() of a map in an earlier run) in place of this map's
   * contents. Checks what a checksum cannot: equal lengths, a power of two, the load bound,
   * every key a whole block number in its probe run; recounts the mapped and trimmed blocks.
   * Returns why the arrays were refused, or undefined once they are adopted.
   */
  adopt (t: BlockMapTables): string | undefined {
    this.assertLoaded()
    if (!t.keys) return this.adoptDense(t)
    const slots = t.keys.length
    if (slots < 16 || (slots & (slots - 1)) !== 0) return `table of ${slots} slots is not a power of two`
    if (t.positions.length !== slots || t.crcs.length !== slots || t.seqs.length !== slots) return 'table arrays differ in length'
    const mask = slots - 1
    let used = 0
    let trimmed = 0
    for (let i = 0; i < slots; i++) {
      const key = t.keys[i]
      if (key === EMPTY) continue
      if (!Number.isSafeInteger(key) || key < 0) return `slot ${i} holds ${key}, not a block number`
      // Linear probing: no empty slot between a key's home and its slot.
      for (let s = this.homeIn(key, mask); s !== i; s = (s + 1) & mask) {
        if (t.keys[s] === EMPTY) return `block ${key} is not where a lookup finds it`
      }
      used++
      if (t.positions[i] < 0) trimmed++
    }
    if (used > MAX_LOAD * slots) return `${used} blocks overfill ${slots} slots`
    this.keys = t.keys
    this.positions = t.positions
    this.crcs = t.crcs
    this.seqs = t.seqs
    this.mask = mask
    this.used = used
    this.trimmedBlocks = trimmed
    this.keysVersion++
    this.layoutVersion++
    this.tracked = undefined // changes are of the arrays replaced
    this.layOutForVolume()
    return undefined
  }

  /** adopt() of a dense table: every row a mapped version (position + 1 >= 1, or TRIMMED + 1) or 0. */
  private adoptDense (t: BlockMapTables): string | undefined {
    const rows = t.positions.length
    if (t.crcs.length !== rows || t.seqs.length !== rows) return 'table arrays differ in length'
    let used = 0
    let trimmed = 0
    for (let i = 0; i < rows; i++) {
      const p = t.positions[i]
      if (p === 0) continue
      if (!Number.isSafeInteger(p) || (p < 1 && p !== TRIMMED_ROW)) return `row ${i} holds position ${p - 1}, not a log position`
      used++
      if (p < 0) trimmed++
    }
    this.keys = undefined
    this.positions = t.positions
    this.crcs = t.crcs
    this.seqs = t.seqs
    this.mask = rows - 1
    this.used = used
    this.trimmedBlocks = trimmed
    this.keysVersion++
    this.layoutVersion++
    this.tracked = undefined
    this.layOutForVolume()
    return undefined
  }

  /**
   * One lookup for all of a block's fields: false when the block is not mapped; else
   * `out` = [position, seq, crc].
   */
  lookup (block: number, out: Float64Array): boolean {
    if (this.keys === undefined) {
      const row = this.rowOf(block)
      if (row < 0 || this.positions[row] === 0) return false
      out[0] = this.positions[row] - 1
      out[1] = this.seqs[row]
      out[2] = this.crcs[row]
      return true
    }
    const slot = this.slotOf(block)
    if (this.keys[slot] === EMPTY) return false
    out[0] = this.positions[slot]
    out[1] = this.seqs[slot]
    out[2] = this.crcs[slot]
    return true
  }

  /**
   * Mapped blocks (written or trimmed at some point), in increasing order: a least significant
   * digit radix sort, 16 bits a pass (two passes below 2^32 blocks), several times faster than
   * TypedArray sort on half a million blocks. The result is shared (a send computes two
   * identities over the same blocks): callers only read it.
   */
  sortedBlocks (): Float64Array | Uint32Array {
    this.assertLoaded()
    const cached = this.sorted?.version === this.keysVersion ? this.sorted.blocks.deref() : undefined
    if (cached) return cached
    const blocks = this.sortBlocks()
    this.sorted = { version: this.keysVersion, blocks: new WeakRef(blocks) }
    return blocks
  }

  private sortBlocks (): Float64Array | Uint32Array {
    if (this.keys === undefined) {
      // In order already: the rows are the block numbers.
      const p = this.positions
      const a = p.length <= 0x100000000 ? new Uint32Array(this.used) : new Float64Array(this.used)
      let n = 0
      for (let b = 0; b < p.length; b++) if (p[b] !== 0) a[n++] = b
      return a
    }
    const keys = this.keys
    let max = 0
    for (let i = 0; i <= this.mask; i++) if (keys[i] > max) max = keys[i]
    // Below 2^32 blocks (16 TiB of 4 KiB blocks) the sort runs on 32-bit integers: half the memory.
    const Digits = max < 0x100000000 ? Uint32Array : Float64Array
    let a = new Digits(this.used)
    let n = 0
    for (let i = 0; i <= this.mask; i++) if (keys[i] !== EMPTY) a[n++] = keys[i]
    let b = new Digits(n)
    const counts = new Uint32Array(65536)
    for (let shift = 1; shift <= max; shift *= 65536) {
      counts.fill(0)
      for (let i = 0; i < n; i++) counts[Math.floor(a[i] / shift) & 0xffff]++
      let sum = 0
      for (let d = 0; d < 65536; d++) { const c = counts[d]; counts[d] = sum; sum += c }
      for (let i = 0; i < n; i++) b[counts[Math.floor(a[i] / shift) & 0xffff]++] = a[i]
      const t = a; a = b; b = t
    }
    return a
  }

  /**
   * Copies the rows of the slots from `slot` on into `out`'s arrays (at most as many as they
   * hold), in the table's own order; returns how many and the slot to go on from (past the
   * last slot: done). A walk of every row in slot order, several times cheaper than
   * sortedBlocks() and a lookup per block, for walks whose result does not depend on the
   * order (a content identity is a sum). Rows move between slots only when `layout` changes
   * (the table grows, a row is deleted, a saved table is adopted): a walk that finds it
   * unchanged between its calls has seen every row mapped all along exactly once.
   */
  rowsFrom (slot: number, out: BlockMapTables & { keys: Float64Array }): { n: number, next: number } {
    this.assertLoaded()
    const { keys, positions, crcs, seqs, mask } = this
    const max = out.keys.length
    let n = 0
    let i = slot
    if (keys === undefined) {
      // Dense: slot = block number.
      for (; i < positions.length && n < max; i++) {
        const p = positions[i]
        if (p === 0) continue
        out.keys[n] = i
        out.positions[n] = p - 1
        out.crcs[n] = crcs[i]
        out.seqs[n] = seqs[i]
        n++
      }
      return { n, next: i }
    }
    for (; i <= mask && n < max; i++) {
      const key = keys[i]
      if (key === EMPTY) continue
      out.keys[n] = key
      out.positions[n] = positions[i]
      out.crcs[n] = crcs[i]
      out.seqs[n] = seqs[i]
      n++
    }
    return { n, next: i }
  }

  /** Changes whenever rows move between slots (see rowsFrom). */
  get layout (): number {
    return this.layoutVersion
  }

  forEach (fn: (block: number, position: number, crc: number, seq: number) => void): void {
    this.assertLoaded()
    const { keys, positions, crcs, seqs } = this
    if (keys === undefined) {
      for (let b = 0; b < positions.length; b++) if (positions[b] !== 0) fn(b, positions[b] - 1, crcs[b], seqs[b])
      return
    }
    for (let i = 0; i <= this.mask; i++) {
      if (keys[i] !== EMPTY) fn(keys[i], positions[i], crcs[i], seqs[i])
    }
  }

  /** Doubles the hash table, or takes the dense layout when that is no bigger than the doubled table. */
  private grow (): void {
    const slots = (this.mask + 1) * 2
    if (this.maybeDense(slots)) return
    const keys = this.keys!
    const { positions, crcs, seqs } = this
    this.layoutVersion++
    this.keys = new Float64Array(slots).fill(EMPTY)
    this.positions = new Float64Array(slots)
    this.crcs = new Uint32Array(slots)
    this.seqs = new Float64Array(slots)
    this.mask = slots - 1
    for (let i = 0; i < keys.length; i++) {
      if (keys[i] === EMPTY) continue
      const slot = this.slotOf(keys[i])
      this.keys[slot] = keys[i]
      this.positions[slot] = positions[i]
      this.crcs[slot] = crcs[i]
      this.seqs[slot] = seqs[i]
    }
  }
}
