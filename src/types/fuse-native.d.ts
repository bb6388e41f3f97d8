// Minimal types for fuse-native 2.2.6 (it ships none): only what src/fuse uses.
declare module 'fuse-native' {
  interface FuseOptions {
    timeout?: number | false
    maxRead?: number
    force?: boolean
    mkdir?: boolean
    fsname?: string
    debug?: boolean
  }
  class Fuse {
    constructor (mnt: string, ops: Record<string, (...args: any[]) => void>, opts?: FuseOptions)
    mount (cb: (err: Error | null) => void): void
    unmount (cb: (err: Error | null) => void): void
    static unmount (mnt: string, cb: (err: Error | null) => void): void
    static ENOENT: number
    static EIO: number
  }
  export = Fuse
}
