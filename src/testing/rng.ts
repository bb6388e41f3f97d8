/**
 * A tiny seeded PRNG (mulberry32) for crash tests. Math.random cannot be replayed; with this,
 * a failing round is reproduced by rerunning with the seed the test printed.
 */
export class Rng {
  private state: number

  constructor (readonly seed: number) {
    this.state = seed >>> 0
  }

  /** Uniform in [0, 1). */
  next (): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0)
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }

  /** Integer in [0, n). */
  int (n: number): number {
    return Math.floor(this.next() * n)
  }

  /** Integer in [lo, hi]. */
  range (lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1)
  }

  chance (p: number): boolean {
    return this.next() < p
  }

  bytes (n: number): Buffer {
    const words = new Uint32Array(Math.ceil(n / 4))
    for (let i = 0; i < words.length; i++) words[i] = this.next() * 4294967296
    return Buffer.from(words.buffer, 0, n)
  }
}
