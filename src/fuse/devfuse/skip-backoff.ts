/**
 * Skips an attempt that keeps coming up empty: after a miss the next 1, then 2, 4 ... at most
 * `max` attempts are skipped; a hit starts over. The polled channel's cheap guesses about the
 * kernel's queue (is another request already waiting? will the next one come within a few
 * microseconds?) cost a system call or a spin when wrong; a client that keeps proving them
 * wrong then pays for one in `max + 1` only, and one that keeps proving them right never waits.
 */
export class SkipBackoff {
  private skips = 0
  private backoff = 0

  constructor (private readonly max: number) {}

  /** Whether to skip this attempt (it then counts as one of the skipped). */
  skip (): boolean {
    if (this.skips === 0) return false
    this.skips--
    return true
  }

  miss (): void {
    this.skips = this.backoff = Math.min(this.max, Math.max(1, 2 * this.backoff))
  }

  hit (): void {
    this.skips = this.backoff = 0
  }
}
