import type fs from 'node:fs'
import { fromSystemError } from '../errors'

/**
 * Bytes a copy writes between two early fdatasyncs. Without them the kernel starts writing a
 * new file's data to disk only once a tenth of memory is dirty (vm.dirty_background_ratio),
 * so a copy of a few GiB reaches its final fsync with all of it still to write, and waits for
 * the disk as long again as the copy took (about 1.6 s for 2 GiB on the bench VM).
 */
export const WRITEBACK_BYTES = 64 * 1024 * 1024

/**
 * Keeps the disk writing a file while a copy fills it: every WRITEBACK_BYTES written, an
 * fdatasync starts in the background (at most one at a time; the copy does not wait for it),
 * so the disk works beside the copy and the final fsync finds little left to write. A failed
 * early sync is kept and thrown by `settle`: Linux reports a writeback error to a file
 * description once, so the final fsync alone could miss it.
 */
export class Writeback {
  private since = 0
  private inFlight: Promise<void> | undefined
  private failure: unknown

  constructor (private readonly fh: fs.promises.FileHandle, private readonly what: string, private readonly everyBytes = WRITEBACK_BYTES) {}

  /** Counts `bytes` written; starts an fdatasync when enough are and none is running. */
  wrote (bytes: number): void {
    this.since += bytes
    if (this.since < this.everyBytes || this.inFlight) return
    this.since = 0
    this.inFlight = this.fh.datasync()
      .catch(err => { this.failure ??= err })
      .finally(() => { this.inFlight = undefined })
  }

  /** Waits for the sync in flight; throws the first early sync's failure. */
  async settle (): Promise<void> {
    await this.inFlight
    if (this.failure !== undefined) throw fromSystemError(this.failure, `fdatasync ${this.what}`)
  }
}
