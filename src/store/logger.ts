/** The store logs through this pino-compatible shape; it never prints on its own. */
export interface Logger {
  info (fields: object, msg: string): void
  warn (fields: object, msg: string): void
  error (fields: object, msg: string): void
  /** Tuning detail (pino's level 20); optional, so any info/warn/error logger fits. */
  debug? (fields: object, msg: string): void
}

export const silentLogger: Logger = { info () {}, warn () {}, error () {} }
