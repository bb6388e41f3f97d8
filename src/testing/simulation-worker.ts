import { Worker, isMainThread, parentPort } from 'node:worker_threads'
import { simulate } from './simulation'
import type { SimulationOptions, SimulationReport } from './simulation'

/**
 * Runs simulations in a worker thread, one after another. A tap test file's thread carries
 * tap's async-hook-domain, whose init and destroy hooks run for every promise made: measured
 * on two seeds, 40 % of the simulation's CPU went to them and to the destroy tracking they
 * turn on. Async hooks belong to one thread, so a simulation run in a worker pays none of it.
 */
export class SimulationWorker {
  private readonly worker = new Worker(__filename)
  private readonly waiting = new Map<number, { resolve: (r: SimulationReport) => void, reject: (e: Error) => void }>()
  private nextId = 0

  constructor () {
    this.worker.on('message', (m: Reply) => {
      const w = this.waiting.get(m.id)
      this.waiting.delete(m.id)
      if (m.report !== undefined) w?.resolve(m.report)
      else w?.reject(Object.assign(new Error(m.error?.message), { stack: m.error?.stack }))
    })
    // A worker that dies (an exception outside a simulation, out of memory) fails every run waiting.
    const failAll = (e: Error): void => { for (const w of this.waiting.values()) w.reject(e); this.waiting.clear() }
    this.worker.on('error', failAll)
    this.worker.on('exit', code => failAll(new Error(`the simulation worker exited with code ${code}`)))
  }

  run (seed: number, opts: SimulationOptions = {}): Promise<SimulationReport> {
    const id = this.nextId++
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject })
      this.worker.postMessage({ id, seed, opts } satisfies Request)
    })
  }

  async close (): Promise<void> {
    await this.worker.terminate()
  }
}

interface Request { id: number, seed: number, opts: SimulationOptions }
interface Reply { id: number, report?: SimulationReport, error?: { message: string, stack?: string } }

if (!isMainThread && parentPort !== null) {
  const port = parentPort
  // One at a time, in order: the simulations share nothing, but a run's CPU is the point.
  let queue = Promise.resolve()
  port.on('message', (r: Request) => {
    queue = queue.then(async () => {
      try {
        port.postMessage({ id: r.id, report: await simulate(r.seed, r.opts) } satisfies Reply)
      } catch (e) {
        const err = e as Error
        port.postMessage({ id: r.id, error: { message: err.message, stack: err.stack } } satisfies Reply)
      }
    })
  })
}
