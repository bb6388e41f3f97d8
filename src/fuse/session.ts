/** The transports that can serve the image folder (src/fuse/transport.ts chooses one). */
export type TransportName = 'devfuse' | 'fuse-native'

/** A mounted folder, whatever the transport. */
export interface Session {
  readonly transport: TransportName
  /**
   * Resolves when the mount ends without unmount() being called: someone ran umount on the
   * mountpoint, the kernel sent DESTROY, or the connection was aborted. (fuse-native never
   * resolves it: libfuse 2.9 does not tell.)
   */
  readonly ended: Promise<void>
  /** Unmounts. The caller has already checked that no image is open. */
  unmount (): Promise<void>
  /**
   * Tells the kernel that the images' attributes changed (a resize): the next stat asks again
   * instead of answering from the attribute cache (1 s). fuse-native cannot (libfuse 2.9's
   * high-level API has no notify): a no-op there.
   */
  attributesChanged (): void
}
