/**
 * The plain model the simulation compares the store with: a volume as bytes plus the block
 * versions written since the last quiescent point, in the order the store applies them.
 *
 * Writes, snapshots, sync points and flushes take their place in the store's append order
 * when they are called (the append lock is FIFO), so the model computes every write's block
 * versions at call time, read-modify-write of partial blocks included. A write that fails may
 * have landed in part: its blocks become wildcards ("any content") until a later aligned
 * write covers them, and a partial-block write over a wildcard stays a wildcard. Wildcards
 * only ever come from failed writes; everything else is compared exactly.
 */
export type WriteStatus = 'pending' | 'acked' | 'failed' | 'refused'

export interface WriteRecord {
  id: number
  firstEvent: number
  events: number
  status: WriteStatus
}

interface BlockEvent {
  block: number
  data: Buffer
  partial: boolean
  write: WriteRecord
  /** A partial block merged into the bytes of a write refused later (nothing of which landed): its other bytes are unknown. */
  tainted?: boolean
}

/** A block's state in some prefix of the events: exact bytes, or any content. */
type BlockState = Buffer | null

/** What an image must be: exact blocks, except those listed in `any`. */
export interface Expectation {
  data: Buffer
  any: Set<number>
}

export class ImageModel {
  /** Content as of the last quiescent point. */
  base: Buffer
  /** Content if every write called so far succeeds: what the next partial write merges into. */
  private readonly content: Buffer
  private events: BlockEvent[] = []
  private writes: WriteRecord[] = []
  private byBlock = new Map<number, number[]>()
  private nextWriteId = 1
  /** Events known durable (a resolved flush, snapshot or sync point covered them). */
  durable = 0

  /**
   * `capacityBytes`: the largest the volume may grow to (the simulation's resizes); the
   * blocks past the volume's current end are zeros in `base`.
   */
  constructor (readonly sizeBytes: number, readonly blockBytes: number, capacityBytes = sizeBytes) {
    this.base = Buffer.alloc(capacityBytes)
    this.content = Buffer.alloc(capacityBytes)
  }

  get blocks (): number {
    return this.sizeBytes / this.blockBytes
  }

  /** Number of events called so far (a point's place in the order). */
  mark (): number {
    return this.events.length
  }

  /** Events of settled writes form a prefix: its length (reads see at least this). */
  settledPrefix (): number {
    const w = this.writes.find(w => w.status === 'pending')
    return w ? w.firstEvent : this.events.length
  }

  /** A write is called: its block versions take their place now. */
  callWrite (offset: number, data: Buffer): WriteRecord {
    const B = this.blockBytes
    data.copy(this.content, offset)
    const first = Math.floor(offset / B)
    const end = Math.ceil((offset + data.length) / B)
    const w: WriteRecord = { id: this.nextWriteId++, firstEvent: this.events.length, events: end - first, status: 'pending' }
    for (let b = first; b < end; b++) {
      const partial = b * B < offset || (b + 1) * B > offset + data.length
      this.pushEvent({ block: b, data: Buffer.from(this.content.subarray(b * B, (b + 1) * B)), partial, write: w })
    }
    this.writes.push(w)
    return w
  }

  private pushEvent (e: BlockEvent): void {
    let list = this.byBlock.get(e.block)
    if (!list) this.byBlock.set(e.block, list = [])
    list.push(this.events.length)
    this.events.push(e)
  }

  markDurable (upTo: number): void {
    this.durable = Math.max(this.durable, upTo)
  }

  /** Block `b`'s state after the first `k` events. */
  stateAt (b: number, k: number): BlockState {
    let state: BlockState = this.base.subarray(b * this.blockBytes, (b + 1) * this.blockBytes)
    for (const i of this.byBlock.get(b) ?? []) {
      if (i >= k) break
      state = next(state, this.events[i])
    }
    return state
  }

  /** What an image cut after `k` events must be. */
  expectationAt (k: number): Expectation {
    const data = Buffer.from(this.base)
    const any = new Set<number>()
    for (const b of this.byBlock.keys()) {
      const s = this.stateAt(b, k)
      if (s === null) any.add(b)
      else s.copy(data, b * this.blockBytes)
    }
    return { data, any }
  }

  /**
   * Checks a read of blocks [first, first+n) that began when `from` events were settled and
   * ended when `to` had been called: each block must be its state after some k in [from, to].
   * Returns the first bad block, or -1.
   */
  checkRead (first: number, got: Buffer, from: number, to: number, offsetInFirst = 0): number {
    const B = this.blockBytes
    const n = Math.ceil((offsetInFirst + got.length) / B)
    for (let i = 0; i < n; i++) {
      const b = first + i
      const lo = Math.max(0, i * B - offsetInFirst)
      const hi = Math.min(got.length, (i + 1) * B - offsetInFirst)
      const piece = got.subarray(lo, hi)
      const at = (s: BlockState): boolean => s === null || s.subarray(lo + offsetInFirst - i * B, hi + offsetInFirst - i * B).equals(piece)
      let state = this.stateAt(b, from)
      let ok = at(state)
      for (const e of this.byBlock.get(b) ?? []) {
        if (ok) break
        if (e < from) continue
        if (e >= to) break
        state = next(state, this.events[e])
        ok = at(state)
      }
      if (!ok) return b
    }
    return -1
  }

  /**
   * After a crash: the volume must be the state after some prefix of at least `durable`
   * events (the log keeps a prefix). Returns the longest such prefix, or the first block no
   * prefix explains.
   */
  checkPrefix (got: Buffer): { prefix: number } | { error: string } {
    const B = this.blockBytes
    const states = new Map<number, BlockState>()
    let bad = 0
    const badBlocks = new Set<number>()
    const matches = (b: number, s: BlockState): boolean => s === null || s.equals(got.subarray(b * B, (b + 1) * B))
    const gotBlocks = got.length / B
    for (let b = 0; b < gotBlocks; b++) {
      const s = this.base.subarray(b * B, (b + 1) * B)
      states.set(b, s)
      if (!matches(b, s)) { bad++; badBlocks.add(b) }
    }
    let best = -1
    for (let j = 0; j <= this.events.length; j++) {
      if (j > 0) {
        const e = this.events[j - 1]
        if (e.block < gotBlocks) { // past the volume's end now, a shrink took it
          const s = next(states.get(e.block)!, e)
          states.set(e.block, s)
          const nowBad = !matches(e.block, s)
          if (nowBad && !badBlocks.has(e.block)) { bad++; badBlocks.add(e.block) }
          if (!nowBad && badBlocks.has(e.block)) { bad--; badBlocks.delete(e.block) }
        }
      }
      if (j >= this.durable && bad === 0) best = j
    }
    if (best >= 0) return { prefix: best }
    const first = [...badBlocks][0]
    return { error: `no prefix of the ${this.events.length} block versions (${this.durable} durable) explains the volume; block ${first ?? '?'} differs at the end (got ${got.subarray((first ?? 0) * B, (first ?? 0) * B + 8).toString('hex')})` }
  }

  /**
   * A write settled. A write cut short by power loss stays pending: it is part of the log's
   * order and either made it into the surviving prefix or not, like any unflushed write.
   */
  settle (w: WriteRecord, ok: boolean | 'refused'): void {
    w.status = ok === 'refused' ? 'refused' : ok ? 'acked' : 'failed'
    if (ok !== 'refused') return
    // Refused before anything of it landed (a write past the end of a volume that shrank while
    // it waited): its versions are no versions, and a later partial write of one of its blocks
    // merged into its bytes at call time.
    for (let i = w.firstEvent; i < w.firstEvent + w.events; i++) {
      for (const j of this.byBlock.get(this.events[i].block) ?? []) if (j > i && this.events[j].partial) this.events[j].tainted = true
    }
    // And the running content (what a partial write called from now on merges into) forgets its
    // bytes: they never landed (seed 7671038 RESIZE=1: a partial write after the refusal carried
    // the refused write's bytes beside its own, where the store merged with what the block held).
    const B = this.blockBytes
    for (let i = w.firstEvent; i < w.firstEvent + w.events; i++) {
      const b = this.events[i].block
      const state = this.stateAt(b, this.events.length)
      if (state !== null) state.copy(this.content, b * B)
    }
  }

  /**
   * Starts a new phase from the observed volume (checked against the model by the caller):
   * the observed content becomes the base, the events are forgotten.
   */
  reset (observed: Buffer): void {
    observed.copy(this.base)
    observed.copy(this.content)
    // Past the end now: zeros, as a later grow reads them.
    this.base.fill(0, observed.length)
    this.content.fill(0, observed.length)
    this.events = []
    this.writes = []
    this.byBlock = new Map()
    this.durable = 0
  }
}

function next (state: BlockState, e: BlockEvent): BlockState {
  if (e.write.status === 'refused') return state // nothing of it landed
  if (e.write.status === 'failed') return null // it may have landed, or not
  if (e.tainted === true) return null
  if (e.partial && state === null) return null // merged into unknown bytes
  return e.data
}

/** Whether `got` meets an expectation; returns the first bad block or -1. */
export function checkExpectation (exp: Expectation, got: Buffer, blockBytes: number): number {
  const blocks = got.length / blockBytes
  for (let b = 0; b < blocks; b++) {
    if (exp.any.has(b)) continue
    if (!got.subarray(b * blockBytes, (b + 1) * blockBytes).equals(exp.data.subarray(b * blockBytes, (b + 1) * blockBytes))) return b
  }
  return -1
}
