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
 */
const EMPTY = -1
const MAX_LOAD = 0.7

/** The arrays of a BlockMap as they are (block-map-file.ts saves and loads them whole). */
export interface BlockMapTables {
  keys: Float64Array
  positions: Float64Array
  crcs: Uint32Array
  seqs: Float64Array
}

export class BlockMap {
  private keys: Float64Array
  private positions: Float64Array
  private crcs: Uint32Array
  private seqs: Float64Array
  private mask: number
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
    return this.pending?.memoryBytes ?? this.keys.byteLength + this.positions.byteLength + this.crcs.byteLength + this.seqs.byteLength
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
    })
    return p.loading
  }

  private assertLoaded (): void {
    if (this.pending) throw new Error('block map used before its deferred table was loaded (await map.loaded() first)')
  }

  private slotOf (block: number): number {
    this.assertLoaded()
    let slot = this.homeOf(block)
    while (this.keys[slot] !== EMPTY && this.keys[slot] !== block) slot = (slot + 1) & this.mask
    return slot
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
    const slot = this.slotOf(block)
    return this.keys[slot] === EMPTY ? -1 : this.positions[slot]
  }

  /** CRC32C of the block's newest data; only meaningful when position() >= 0. */
  crc (block: number): number {
    const slot = this.slotOf(block)
    return this.crcs[slot]
  }

  /** Sequence number of the block's newest version; only meaningful when position() >= 0. */
  seq (block: number): number {
    return this.seqs[this.slotOf(block)]
  }

  /**
   * Records a version of a block unless the map already holds a newer one (by sequence
   * number): replaying a moved old version never hides the newest.
   */
  set (block: number, position: number, crc: number, seq: number): void {
    if (this.tracked) this.track(block)
    let slot = this.slotOf(block)
    if (this.keys[slot] === EMPTY) {
      if ((this.used + 1) > MAX_LOAD * (this.mask + 1)) {
        this.grow()
        slot = this.slotOf(block)
      }
      this.keys[slot] = block
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
    let slot = this.slotOf(block)
    if (this.keys[slot] === EMPTY) return false
    this.used--
    this.keysVersion++
    this.layoutVersion++
    if (this.positions[slot] < 0) this.trimmedBlocks--
    let next = (slot + 1) & this.mask
    while (this.keys[next] !== EMPTY) {
      const key = this.keys[next]
      const home = this.homeOf(key)
      // Move `next` into the hole when its home slot is not between the hole and `next`.
      if (((next - home) & this.mask) >= ((next - slot) & this.mask)) {
        this.keys[slot] = key
        this.positions[slot] = this.positions[next]
        this.crcs[slot] = this.crcs[next]
        this.seqs[slot] = this.seqs[next]
        slot = next
      }
      next = (next + 1) & this.mask
    }
    this.keys[slot] = EMPTY
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
    return undefined
  }

  /**
   * One lookup for all of a block's fields: false when the block is not mapped; else
   * `out` = [position, seq, crc].
   */
  lookup (block: number, out: Float64Array): boolean {
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
    let max = 0
    for (let i = 0; i <= this.mask; i++) if (this.keys[i] > max) max = this.keys[i]
    // Below 2^32 blocks (16 TiB of 4 KiB blocks) the sort runs on 32-bit integers: half the memory.
    const Digits = max < 0x100000000 ? Uint32Array : Float64Array
    let a = new Digits(this.used)
    let n = 0
    for (let i = 0; i <= this.mask; i++) if (this.keys[i] !== EMPTY) a[n++] = this.keys[i]
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
  rowsFrom (slot: number, out: BlockMapTables): { n: number, next: number } {
    this.assertLoaded()
    const { keys, positions, crcs, seqs, mask } = this
    const max = out.keys.length
    let n = 0
    let i = slot
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
    for (let i = 0; i <= this.mask; i++) {
      if (this.keys[i] !== EMPTY) fn(this.keys[i], this.positions[i], this.crcs[i], this.seqs[i])
    }
  }

  private grow (): void {
    const { keys, positions, crcs, seqs } = this
    const slots = (this.mask + 1) * 2
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
