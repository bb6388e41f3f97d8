#!/usr/bin/env node
// The index checkpoint's commit alone (IndexDb.commit), as random 4 KiB writes give it: N
// versions of random blocks, one entry each, committed R times into a fresh LevelDB under
// /tmp. Prints the wall and CPU milliseconds of each commit (the first two are warm-up) and
// their medians: what a checkpoint holds the event loop and the disk's pool thread for.
// Usage: node bench/index-commit.mjs [N=20000] [R=10]   (after `make build`; D=other checkout)
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
const require = createRequire(import.meta.url)
const root = process.env.D ?? path.join(path.dirname(new URL(import.meta.url).pathname), '..')
const { IndexDb, IndexBatch } = require(path.join(root, 'dist/src/store/index-db.js'))
const N = Number(process.argv[2] ?? 20000); const R = Number(process.argv[3] ?? 10)
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'index-commit-'))
try {
  const db = await IndexDb.open(dir)
  let seq = 0; let position = 0; let committed = 0
  const runs = []
  for (let r = 0; r < R; r++) {
    const batch = new IndexBatch()
    for (let i = 0; i < N; i++) {
      seq++; position += 4160
      const block = Math.floor(Math.random() * 262144)
      batch.addBlock(block, seq, position, 12345)
      batch.entries.set(seq, { kind: 1, timeMs: Date.now(), position: position - 64, block, count: 1 })
    }
    const cpu = process.cpuUsage(); const wall = performance.now()
    await db.commit(batch, { seq, position, timeMs: Date.now() }, undefined, committed)
    const used = process.cpuUsage(cpu)
    committed = seq
    runs.push([Math.round(performance.now() - wall), Math.round((used.user + used.system) / 1000)])
  }
  const median = xs => xs.sort((a, b) => a - b)[xs.length >> 1]
  const kept = runs.slice(2)
  console.log(`commits of ${N} versions, ms [wall, cpu]: ${JSON.stringify(kept)}`)
  console.log(`median wall ${median(kept.map(x => x[0]))} ms, median cpu ${median(kept.map(x => x[1]))} ms`)
} finally {
  fs.rmSync(dir, { recursive: true, force: true })
}
