import path from 'node:path'
import { LogdiskError } from '../errors'
import type { SegmentHome } from '../store/segment-home'
import type { Rng } from './rng'

/**
 * A storage pool for the simulation: volumes are directories of the simulated disk, each
 * with a capacity in segments. New segments go to `copies` distinct volumes with room
 * (mirroring when 2), chosen by the seed; a volume being drained takes no new segments.
 * Growing adds a volume; draining moves segments off one (Store.relocateSegment) and then
 * drops it.
 */
export class SimHome implements SegmentHome {
  private readonly segmentsOn = new Map<string, Set<number>>()
  readonly draining = new Set<string>()
  private nextVolume = 0

  constructor (
    private readonly root: string,
    private readonly rng: Rng,
    readonly copies: number,
    private readonly capacitySegments: number,
    volumes: number
  ) {
    for (let i = 0; i < volumes; i++) this.grow()
  }

  /** Adds a volume (pool growth); returns its name. */
  grow (): string {
    const name = `v${this.nextVolume++}`
    this.segmentsOn.set(name, new Set())
    return name
  }

  /** Forgets a drained volume. */
  drop (volume: string): void {
    if ((this.segmentsOn.get(volume)?.size ?? 0) > 0) throw new Error(`volume ${volume} still holds segments`)
    this.segmentsOn.delete(volume)
    this.draining.delete(volume)
  }

  /** Forgets where segments are (a reopen counts them again as it finds them). */
  resetAccounting (): void {
    for (const set of this.segmentsOn.values()) set.clear()
  }

  segmentsOf (volume: string): number[] {
    return [...(this.segmentsOn.get(volume) ?? [])].sort((a, b) => a - b)
  }

  dirOf (volume: string): string {
    return path.join(this.root, volume, 'segments')
  }

  volumes (): string[] {
    return [...this.segmentsOn.keys()]
  }

  /** Volumes with room that take new segments, excluding `exclude`, in seeded order. */
  candidates (exclude: string[] = []): string[] {
    const out = this.volumes().filter(v => !this.draining.has(v) && !exclude.includes(v) && this.segmentsOn.get(v)!.size < this.capacitySegments)
    for (let i = out.length - 1; i > 0; i--) {
      const j = this.rng.int(i + 1);
      [out[i], out[j]] = [out[j], out[i]]
    }
    return out
  }

  async place (segmentId: number): Promise<string[]> {
    const chosen = this.candidates().slice(0, this.copies)
    if (chosen.length < this.copies) throw new LogdiskError('NO_SPACE', `the simulated pool has no room for segment ${segmentId}`)
    this.occupied(segmentId, chosen) // reserved at once, as the pool does
    return chosen
  }

  occupied (segmentId: number, volumes: string[]): void {
    for (const v of volumes) this.segmentsOn.get(v)?.add(segmentId)
  }

  vacated (segmentId: number, volumes: string[]): void {
    for (const v of volumes) this.segmentsOn.get(v)?.delete(segmentId)
  }

  stillSuits (volumes: string[]): boolean {
    return volumes.length === this.copies && volumes.every(v => this.segmentsOn.has(v) && !this.draining.has(v))
  }
}
