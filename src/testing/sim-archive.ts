import { LogdiskError, fromSystemError } from '../errors'
import type { ArchiveLink } from '../store/archive-link'
import type { SimScheduler } from './sim-scheduler'

/**
 * Backing storage for the simulation: objects in memory, outside the simulated machine (a
 * crash does not touch them). A put is atomic: it lands whole when the scheduler completes
 * it, or not at all. Labels: `archive.put <id>`, `archive.get <id>`, `archive.list`.
 */
export class SimArchive implements ArchiveLink {
  readonly objects = new Map<number, Buffer>()
  puts = 0
  overwrites = 0

  constructor (private readonly scheduler: SimScheduler) {}

  private async enter (label: string): Promise<void> {
    try {
      await this.scheduler.io(label)
    } catch (err) {
      throw fromSystemError(err, label)
    }
  }

  async put (id: number, data: Buffer): Promise<void> {
    const copy = Buffer.from(data)
    await this.enter(`archive.put ${id}`)
    if (this.objects.has(id) && !this.objects.get(id)!.equals(copy)) this.overwrites++
    this.objects.set(id, copy)
    this.puts++
  }

  async get (id: number): Promise<Buffer> {
    await this.enter(`archive.get ${id}`)
    const data = this.objects.get(id)
    if (!data) throw new LogdiskError('NOT_FOUND', `simulated archive: no object for segment ${id}`)
    return Buffer.from(data)
  }

  async list (): Promise<number[]> {
    await this.enter('archive.list')
    return [...this.objects.keys()].sort((a, b) => a - b)
  }

  describe (): string {
    return 'simulated archive'
  }
}
