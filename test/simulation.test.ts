import t from 'tap'
import { SimulationWorker } from '../src/testing/simulation-worker'
import type { SimulationOptions } from '../src/testing/simulation'

/**
 * The deterministic simulation (src/testing/simulation.ts) under fixed seeds: every seed runs
 * writers, readers, snapshots, sync points, compaction in every mode, baseline merges,
 * archiving, pool growth and drain, mirror repair, reopens, index rebuilds and power losses
 * concurrently under a seeded scheduler with injected faults, against a model. The seeds
 * below include every one that once found a defect (see the git log); `make simulate
 * SEEDS=N` runs many more and prints any failing seed.
 */
const FOUND_DEFECTS = [18, 41, 52, 131, 205, 229, 324, 408, 496, 500]
const MORE = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11] // 2, 3 and 11 found the handle cache closing a handle in use
// 1001 and 1004 found a grouped write split over two writevs (by a segment roll) reporting
// success when the second failed; they draw everything from the seed, as when found.
const FOUND_BY_GROUP_COMMIT = [1001, 1004]
// Found by scripts/simulate.mjs, replayed with its options (below: the bring-back and the
// saved map drawn from the seed, as there; with the options of the seeds above, a seed is a
// different run and may not meet its defect again). With the disk dropping pages whose
// write-back failed: 16000014 and 16000098 lost flushed data to a flush retried after a
// failed fdatasync; 16000009 a segment's header (the first try of the fix synced the
// directory but did not write the header again); 16200023 the fdatasync of the cut after a
// failed append, which did not count as a failed write-back; 16300036 and 16300075 a mirror
// copy dropped before the remount, whose unflushed writes it may lose; 16400056 a flush's
// fdatasync that succeeded beside the failing one of the cut (Linux tells one of them), and
// 16400036 a checkpoint that wrote a dropped mirror copy back into the segment's record, so
// the next open compared it through the page cache and kept it; 16500117 a baseline merge
// after the baseline's fdatasync failed (the store did not say so). 16500192: compaction
// deleted a recycled segment's copies before the index said so. 16800056 (40 phases): a
// fetched archived segment evicted from the cache while a read opened it. 17100006 (PAGES=1
// REBUILDS=1, 40 phases): a full rebuild made the good copy of a mirrored segment match a
// copy dropped long before, which nothing had removed. 7310047 (PAGES=1 REBUILDS=1): a full
// rebuild took a segment whose header page the power loss kept, and none of its entries, for
// one holding entries, so the torn unflushed entry before it was kept as damage and read EIO
// (test/rebuild-torn-empty-next.test.ts; the fix's extra read at a rebuild changes the run, so
// the seed no longer meets that power loss). 7420062 (PAGES=1 REBUILDS=1): compaction counted
// the holders of needed trims by runs of blocks trimmed at one seq, and a run whose blocks were
// held in two segments (a trim move had taken only some of them) counted the first alone, so
// the other's trim move entry was freed while the index still named it; verify found the
// blocks indexed but not in the log (test/trim-holders-split-run.test.ts). 7600183 (PAGES=1
// REBUILDS=1): free headers a compaction could not write (ENOSPC) were redone from their
// pending record by the next pass, but the index never took the entries they freed, so that
// pass kept a deletion marker the redone run began with and began its own run at the next
// entry, inside the redone free entry, and punched it; verify: 'not an entry header' and the
// rest of the segment lost (test/redo-free-headers-index.test.ts).
const PAGES_OPTS = { segmentBlocks: 1032, writevMaxBytes: 16384, crashPages: true } // scripts/simulate.mjs PAGES=1
const FOUND_BY_SIMULATE: Array<[seed: number, opts: SimulationOptions]> = [
  ...[16000009, 16000014, 16000098, 16200023, 16300036, 16300075, 16400036, 16400056, 16500117, 16500192].map(s => [s, {}] as [number, SimulationOptions]),
  [16800056, { phases: 40 }],
  [17100006, { ...PAGES_OPTS, rebuildAfterPowerLoss: true, phases: 40 }],
  [7310047, { ...PAGES_OPTS, rebuildAfterPowerLoss: true }],
  [7420062, { ...PAGES_OPTS, rebuildAfterPowerLoss: true }],
  [7600183, { ...PAGES_OPTS, rebuildAfterPowerLoss: true }]
]
const seeds = process.env.SIM_SEEDS ? process.env.SIM_SEEDS.split(',').map(Number) : [...FOUND_DEFECTS, ...MORE, ...FOUND_BY_GROUP_COMMIT]

t.setTimeout(600_000)
// In a worker thread: tap's async hooks on this thread cost a simulation 40 % of its CPU.
const sim = new SimulationWorker()
t.teardown(() => sim.close())
t.test(`${seeds.length} seeds`, async t => {
  let steps = 0
  let ops = 0
  let crashes = 0
  let rebuilds = 0
  let faults = 0
  let trimMoves = 0
  for (const seed of seeds) {
    // The seeds of found defects replay as they were found (without the replication gate and
    // with the store's 64 open segment handles, which came later); the others draw both from the seed.
    // Bringing archived segments back came later still: off for these seeds (they replay as
    // they were), on for BRING_BACK below.
    const r = await sim.run(seed, FOUND_DEFECTS.includes(seed) ? { replicationGate: false, maxOpenSegments: 64, bringBack: false, savedMap: false } : { bringBack: false, savedMap: false })
    steps += r.steps
    ops += Object.values(r.ops).reduce((a, b) => a + b, 0)
    crashes += r.crashes
    rebuilds += r.rebuilds
    faults += r.faultsInjected
    trimMoves += r.ops['compaction moved trims'] ?? 0
    t.pass(`seed ${seed}: ${r.phases} phases, ${r.steps} I/O steps, ${r.crashes} power losses, ${r.rebuilds} rebuilds, ${r.faultsInjected} faults (${r.config})`)
  }
  t.comment(`${seeds.length} seeds: ${ops} operations, ${steps} I/O steps, ${crashes} power losses, ${rebuilds} index rebuilds, ${faults} injected faults`)
  t.ok(crashes > 0 && rebuilds > 0 && faults > 0, 'the seeds crashed, rebuilt and injected faults')
  if (!process.env.SIM_SEEDS) t.ok(trimMoves > 0, `compactions moved trims (${trimMoves} times): the simulation reaches trim move entries`)
})

const FOUND = process.env.SIM_SEEDS ? [] : FOUND_BY_SIMULATE
t.test(`${FOUND.length} seeds found by scripts/simulate.mjs, with its options`, async t => {
  for (const [seed, opts] of FOUND) {
    const r = await sim.run(seed, opts)
    t.pass(`seed ${seed}: ${r.phases} phases, ${r.steps} I/O steps, ${r.crashes} power losses, ${r.remounts} remounts, ${r.faultsInjected} faults (${r.config})`)
  }
})

/**
 * The block map saved at clean closes (src/store/block-map-file.ts) under reopens, index
 * rebuilds (the index deleted, the saved map left behind) and power losses: every image
 * and point is checked against the model after each, as for the seeds above.
 */
const SAVED_MAP = process.env.SIM_SEEDS ? [] : [3, 6, 12, 17]
t.test(`saved block map: ${SAVED_MAP.length} seeds`, async t => {
  let loads = 0
  for (const seed of SAVED_MAP) {
    const r = await sim.run(seed, { bringBack: false, savedMap: true })
    loads += r.savedMapLoads
    t.pass(`seed ${seed}: ${r.savedMapLoads} opens loaded the saved map, ${r.reopens} clean reopens, ${r.rebuilds} rebuilds, ${r.crashes} power losses (${r.config})`)
  }
  if (SAVED_MAP.length > 0) t.ok(loads > 0, `${loads} opens loaded a saved map`)
})

/**
 * The background fetch of a store recovered from a replica (Placement.bringBack) against
 * reads, writes, compaction, archiving, drains, faults and power losses: seeds with an archive
 * and bring-back on.
 */
const BRING_BACK = process.env.SIM_SEEDS ? [] : [4, 10, 21, 34]
t.test(`bring-back: ${BRING_BACK.length} seeds`, async t => {
  let brought = 0
  for (const seed of BRING_BACK) {
    const r = await sim.run(seed, { bringBack: true, savedMap: false })
    t.match(r.config, /with bring-back/, `seed ${seed} has an archive and brings segments back`)
    brought += r.ops['bring back'] ?? 0
    t.pass(`seed ${seed}: ${r.ops['bring back'] ?? 0} bring-backs, ${r.ops.archive ?? 0} archive passes, ${r.crashes} power losses (${r.config})`)
  }
  if (BRING_BACK.length > 0) t.ok(brought > 0, `${brought} bring-backs`)
})

/**
 * Group commit with several writevs in flight (log-appender.ts WRITEVS_IN_FLIGHT): with the
 * default 258-block segments and 1 MiB writevs the seeds above never have two writevs of a
 * group in flight at once. These run 1032-block segments and 16 KiB writevs, so the
 * simulation's writes, reads, passes, faults and power losses meet groups of up to four
 * writevs in flight, finishing in any order.
 */
const IN_FLIGHT = process.env.SIM_SEEDS ? [] : [2, 7, 8, 19] // 2: four writevs in flight at once (60 reached only two after compaction's second history walk changed the steps)
t.test(`writevs in flight: ${IN_FLIGHT.length} seeds`, async t => {
  let most = 0
  for (const seed of IN_FLIGHT) {
    const r = await sim.run(seed, { segmentBlocks: 1032, writevMaxBytes: 16384, bringBack: false, savedMap: false })
    most = Math.max(most, r.maxWritesInFlight)
    t.pass(`seed ${seed}: up to ${r.maxWritesInFlight} writes in flight on one file, ${r.crashes} power losses, ${r.faultsInjected} faults (${r.config})`)
  }
  if (IN_FLIGHT.length > 0) t.ok(most >= 3, `up to ${most} writevs of a group were in flight at once`)
})

/**
 * Power losses that keep any mix of a file's unsynced pages (SimFileLayer.crash `pages`: a
 * page cache writes back in any order), with writevs in flight as above. Seeds 17 and 20
 * once found a torn entry followed by whole later ones (a later writev on disk, an earlier
 * one torn) kept as damage inside the log: the torn blocks' flushed versions read CORRUPT
 * (attack3-torn-beyond-reach keeps that case). In each of these seeds recovery cuts a torn
 * write because no entry after it records it as flushed (`durableSeq`, store format 3): the
 * model then checks nothing flushed went with it. What a seed does depends on every
 * scheduling step of the code, and the checks below say when a seed stops doing what it is
 * here for: after compaction's second history walk, 17, 20 and 114 gave way to 106, 110 and
 * 134; after segments made ahead stopped syncing (and the maintenance reserve), 104, 119
 * and 145; after every pass's fence began committing staged index changes, those no longer
 * cut, and 132, 151 and 203 (the first three of 100-203 that cut, 2-4 power losses each)
 * took their places; after compaction's free-header writes were also recorded in a file
 * (pending-headers.ts), those no longer cut, and 164, 167 and 199 (the first three of 100-199
 * that cut) took theirs; after a checkpoint stopped reading the records of entries newer than
 * the one before (IndexDb.commit's `committedThrough`), 110, 157 and 165 (the first three of
 * 100-199 that cut, 2-5 power losses each); after compaction began freeing markers (its reads
 * of marker headers and its record of dropped copies before free headers), 128, 132 (the only
 * two of 100-199 that cut) and 227 (the first of 200-299); after the simulated disk began
 * serving synchronous reads and writes (inline I/O and readCached, asked by the seed), 102,
 * 107 and 145 (the first three of 100-199 that cut, 1-2 power losses each; seven of 100-199
 * and three of 200-299 do); after compaction began moving trims and redoing pending header
 * writes first, 110, 176 and 204 (the first three of 100-299 that cut; 224 and 273 do too;
 * 204 no longer does since data and trim moves share one judgement); after a pass wrote its
 * entries' freed flags before clearing its free headers' record (one more index write per
 * segment) and the other changes of 2026-12-07 afternoon, 146, 198 and 231 (the first two of
 * 100-199 that cut, and the first of 200-299; 233, 234 and 244 do too).
 * Found by running seeds and reading `unflushedCuts`.
 */
const PAGES = process.env.SIM_SEEDS ? [] : [146, 198, 231]
t.test(`power loss keeps any unsynced pages: ${PAGES.length} seeds`, async t => {
  let unflushedCuts = 0
  let crashes = 0
  for (const seed of PAGES) {
    const r = await sim.run(seed, { segmentBlocks: 1032, writevMaxBytes: 16384, crashPages: true, bringBack: false, savedMap: false })
    unflushedCuts += r.unflushedCuts
    crashes += r.crashes
    t.pass(`seed ${seed}: ${r.crashes} power losses, ${r.unflushedCuts} torn writes cut by durableSeq, up to ${r.maxWritesInFlight} writes in flight (${r.config})`)
  }
  if (PAGES.length > 0) t.ok(unflushedCuts > 0, `${unflushedCuts} torn writes cut because no later entry recorded them as flushed`)
  if (PAGES.length > 0) t.ok(crashes >= PAGES.length, `${crashes} power losses in ${PAGES.length} seeds`)
})

/**
 * The index deleted after half the power losses (a full rebuild from the log, with the
 * segment made ahead of its roll on disk) and drains that first remove the segment made
 * ahead, as Pool.drain does: the hostile tester's options (attack3), under which a rebuild
 * took a torn last write for damage when an empty next segment followed it. 7019 and 7020
 * stopped rebuilding once compaction judged data and trim moves with one walk (the steps
 * changed); they stay (7020 found a defect), and 7024 and 7026, the first of 7019-7100 that
 * rebuild after a power loss, keep the rebuilds.
 */
const REBUILDS = process.env.SIM_SEEDS ? [] : [7019, 7020, 7024, 7026]
t.test(`rebuilds after power loss, drains remove the next segment: ${REBUILDS.length} seeds`, async t => {
  let rebuilds = 0
  for (const seed of REBUILDS) {
    // Seed 7020 once found two copies of a segment with different headers (each copy took its
    // own clock reading for createdMs); a repair from one of them then changed the bytes the
    // other had, and the check of sealed segments above the replication gate failed.
    const r = await sim.run(seed, { rebuildAfterPowerLoss: true, drainDiscardsNext: true, segmentBlocks: seed % 2 ? 700 : undefined })
    rebuilds += r.rebuilds
    t.pass(`seed ${seed}: ${r.crashes} power losses, ${r.rebuilds} rebuilds (${r.config})`)
  }
  if (REBUILDS.length > 0) t.ok(rebuilds > 0, `${rebuilds} index rebuilds`)
})

/**
 * Compactions that find more dead versions than they hold (compactionDeadBatch: 2 or 5) walk
 * the history again and take them out of the index a batch at a time, each batch committed
 * while writes, checkpoints, snapshots and power losses land between them (issue 11: a pass
 * after fast sequential writes held millions at once, most of the daemon's peak memory).
 */
const DEAD_BATCHES: Array<[seed: number, opts: SimulationOptions]> = process.env.SIM_SEEDS
  ? []
  : [[7000, { compactionDeadBatch: 2 }], [7001, { compactionDeadBatch: 2 }], [7002, { compactionDeadBatch: 5 }], [7003, { ...PAGES_OPTS, compactionDeadBatch: 2 }]]
t.test(`compaction frees dead versions in batches: ${DEAD_BATCHES.length} seeds`, async t => {
  let batched = 0
  for (const [seed, opts] of DEAD_BATCHES) {
    const r = await sim.run(seed, opts)
    batched += r.ops['compaction freed versions in batches'] ?? 0
    t.pass(`seed ${seed}: ${r.crashes} power losses, ${r.ops['compaction freed versions in batches'] ?? 0} compactions freed in batches (${r.config})`)
  }
  if (DEAD_BATCHES.length > 0) t.ok(batched > 0, `${batched} compactions freed dead versions in batches`)
})

/**
 * The walks of the whole history read a chunk with more versions than they may hold again by
 * groups of blocks (IndexDb.hotChunkBatches): at most 4 here, so nearly every chunk is read
 * that way (144 times in seed 50003, counted by hand), with dead versions committed two at a
 * time between the groups and every other activity and power loss landing among them.
 */
const CROWDED: Array<[seed: number, opts: SimulationOptions]> = process.env.SIM_SEEDS
  ? []
  : [[7100, { historyHoldVersions: 4, compactionDeadBatch: 2 }], [7101, { ...PAGES_OPTS, historyHoldVersions: 3 }]]
t.test(`crowded chunks read by groups of blocks: ${CROWDED.length} seeds`, async t => {
  for (const [seed, opts] of CROWDED) {
    const r = await sim.run(seed, opts)
    t.match(r.config, /chunks of over \d+ versions read by groups/, `seed ${seed}: ${r.ops.compact ?? 0} compactions, ${r.crashes} power losses (${r.config})`)
  }
})

/**
 * Grows and shrinks of the volume (SimulationOptions.resize: scripts/simulate.mjs RESIZE=1)
 * among the writes, discards, snapshots, compaction, faults and power losses, with writes
 * aimed at the tail while a shrink waits for the append lock: the model checks that a shrink
 * goes through only with nothing written past its end at its place in the append order, that
 * every write reaching past the end after it is refused, that snapshots and sync points keep
 * the size at their cut, and that the size after a power loss is the last one acknowledged
 * (or the one in flight). Off by default: its own rng leaves every other seed as it was.
 */
const RESIZES: Array<[seed: number, opts: SimulationOptions]> = process.env.SIM_SEEDS ? [] : [
  [3, { resize: true }], // 3: grows, shrinks, refused shrinks and a write into the tail refused past the end
  [7670088, { ...PAGES_OPTS, rebuildAfterPowerLoss: true, resize: true }] // a partial write of a block after a shrink, a refused full write of it and a grow: merged with the zeros the grow shows (the model's merge base kept the refused bytes; helper-102)
]
t.test(`resizes: ${RESIZES.length} seeds`, async t => {
  for (const [seed, opts] of RESIZES) {
    const r = await sim.run(seed, opts)
    const n = (k: string): number => r.ops[k] ?? 0
    t.ok(n('grew') > 0 && n('shrank') > 0 && n('shrink refused') > 0, `seed ${seed}: ${n('grew')} grows, ${n('shrank')} shrinks, ${n('shrink refused')} shrinks refused, ${n('refused past the end')} writes refused past the end, ${r.crashes} power losses (${r.config})`)
  }
})
