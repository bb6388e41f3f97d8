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

export class BlockMap {
  private keys: Float64Array
  private positions: Float64Array
  private crcs: Uint32Array
  private seqs: Float64Array
  private mask: number
  private used = 0
  /** Blocks whose newest version is a trim (position TRIMMED): they read as zeros. */
  private trimmedBlocks = 0

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
    return this.used
  }

  /** Blocks whose newest version is a trim. */
  get trimmed (): number {
    return this.trimmedBlocks
  }

  /** Bytes held by the table's arrays. */
  get memoryBytes (): number {
    return this.keys.byteLength + this.positions.byteLength + this.crcs.byteLength + this.seqs.byteLength
  }

  private slotOf (block: number): number {
    let slot = this.homeOf(block)
    while (this.keys[slot] !== EMPTY && this.keys[slot] !== block) slot = (slot + 1) & this.mask
    return slot
  }

  /** Home slot: a hash mixing both 32-bit halves so that blocks 2^k apart do not collide. */
  private homeOf (block: number): number {
    const lo = block >>> 0
    const hi = Math.floor(block / 0x100000000) >>> 0
    let h = Math.imul(lo ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b)
    h ^= h >>> 13
    h = Math.imul(h, 0xc2b2ae35)
    h ^= h >>> 16
    return h & this.mask
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
    let slot = this.slotOf(block)
    if (this.keys[slot] === EMPTY) {
      if ((this.used + 1) > MAX_LOAD * (this.mask + 1)) {
        this.grow()
        slot = this.slotOf(block)
      }
      this.keys[slot] = block
      this.used++
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
    let slot = this.slotOf(block)
    if (this.keys[slot] === EMPTY) return false
    this.used--
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

  forEach (fn: (block: number, position: number, crc: number, seq: number) => void): void {
    for (let i = 0; i <= this.mask; i++) {
      if (this.keys[i] !== EMPTY) fn(this.keys[i], this.positions[i], this.crcs[i], this.seqs[i])
    }
  }

  private grow (): void {
    const { keys, positions, crcs, seqs } = this
    const slots = (this.mask + 1) * 2
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
