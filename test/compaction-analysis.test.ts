// Which versions compaction keeps (compaction.ts), against a model written the obvious way:
// random histories of blocks, snapshot cuts, ranges, fences and history windows. The analysis
// keeps only the needed versions' positions (sorted); liveDetails, a second walk, gives the
// block, seq and CRC of those a filter chooses, in the same position order.
import t from 'tap'
import { analyzeVersions, anyLiveIn, deadVersionBatches, liveDetails, liveTrimRuns, type Judgement } from '../src/store/compaction'
import { Rng } from '../src/testing/rng'

type Version = [block: number, seq: number, position: number, crc: number]

/** The versions as IndexDb.historyBatches gives them: flat rows of four numbers, in batches of 1 to 20 versions (a block's versions fall on both sides of a batch's end). */
async function * walk (versions: Version[], rng = new Rng(7)): AsyncGenerator<number[]> {
  for (let i = 0; i < versions.length;) {
    const n = rng.range(1, 20)
    yield versions.slice(i, i + n).flat()
    i += n
  }
}

/** The model: a version is needed unless superseded in the range by a successor at or before the fence and the window, with no cut in its life. */
function model (versions: Version[], j: Judgement): { live: Version[], dead: Array<[number, number]> } {
  const seen = versions.filter(v => v[1] <= j.fenceSeq)
  const live: Version[] = []
  const dead: Array<[number, number]> = []
  for (let i = 0; i < seen.length; i++) {
    const v = seen[i]
    const next = seen[i + 1]
    const superseded = next !== undefined && next[0] === v[0]
    const cut = superseded && j.cuts.some(c => c >= v[1] && c < next[1])
    if (superseded && v[1] >= j.range.from && v[1] <= j.range.to && !cut && next[1] <= j.windowStart) dead.push([v[0], v[1]])
    else live.push(v)
  }
  return { live, dead }
}

t.test('needed positions, dead versions and the details of chosen versions match the model', async t => {
  for (let round = 0; round < 200; round++) {
    const rng = new Rng(0xc0a1 + round)
    const blocks = rng.range(1, 40)
    const writes = rng.range(1, 300)
    // Sequence order is log order: each write gets the next seq and a fresh position (some trims: position -1).
    const perBlock = new Map<number, Version[]>()
    let position = 4096
    const add = (v: Version): void => {
      const list = perBlock.get(v[0]) ?? []
      list.push(v)
      perBlock.set(v[0], list)
    }
    for (let seq = 1; seq <= writes; seq++) {
      const block = rng.int(blocks)
      if (!rng.chance(0.05)) {
        add([block, seq, position, rng.int(2 ** 32)])
        position += 4096 + rng.int(3) * 4096
        continue
      }
      // A trim of a run of blocks. Its crc names its holder (format.ts trimHolder): 0 its own
      // entry (an older release), else a segment + 1; the blocks of one run may be held in
      // different segments (a trim move takes only those still needed: seed 7420062).
      const holder = rng.int(4)
      const end = Math.min(blocks, block + rng.range(1, 6))
      for (let b = block; b < end; b++) add([b, seq, -2, rng.chance(0.6) ? holder : rng.int(4)])
    }
    const versions = [...perBlock.keys()].sort((a, b) => a - b).flatMap(b => perBlock.get(b)!)
    const cuts = [...new Set(Array.from({ length: rng.int(4) }, () => rng.range(1, writes)))].sort((a, b) => a - b)
    const from = rng.range(1, writes)
    const j: Judgement = {
      cuts,
      range: { from: rng.chance(0.5) ? 1 : from, to: rng.chance(0.5) ? writes : rng.range(from, writes) },
      fenceSeq: rng.chance(0.5) ? writes : rng.range(1, writes),
      windowStart: rng.chance(0.5) ? Number.MAX_SAFE_INTEGER : rng.range(1, writes + 1)
    }
    const want = model(versions, j)
    const got = await analyzeVersions(walk(versions, rng), j)
    const wantPositions = want.live.filter(v => v[2] >= 0).map(v => v[2]).sort((a, b) => a - b)
    t.same([...got.live.positions], wantPositions, `round ${round}: needed positions`)
    const liveTrims = want.live.filter(v => v[2] < 0)
    t.same([...got.legacyTrims].sort((a, b) => a - b), [...new Set(liveTrims.filter(v => v[3] === 0).map(v => v[1]))].sort((a, b) => a - b), `round ${round}: needed trims held by their own entries`)
    t.same([...got.trimHolders.keys()].sort((a, b) => a - b), [...new Set(liveTrims.filter(v => v[3] > 0).map(v => v[3] - 1))].sort((a, b) => a - b), `round ${round}: segments holding needed moved trims`)
    // The runs a trim move lists: every needed trim held where chosen, once, runs of consecutive blocks at one seq.
    const holders = new Set([rng.int(4), rng.int(4)])
    const ownSegment = (seq: number): number => seq % 3
    const holderOf = (seq: number, crc: number): number => crc === 0 ? ownSegment(seq) : crc - 1
    const runs = await liveTrimRuns(walk(versions, rng), j, holderOf, id => holders.has(id))
    const listed = runs.flatMap(r => Array.from({ length: r.count }, (_, i) => `${r.block + i}@${r.seq}`)).sort()
    t.same(listed, liveTrims.filter(v => holders.has(holderOf(v[1], v[3]))).map(v => `${v[0]}@${v[1]}`).sort(), `round ${round}: trim runs list exactly the chosen needed trims`)
    for (let i = 1; i < runs.length; i++) {
      const [a, b] = [runs[i - 1], runs[i]]
      t.ok(a.seq < b.seq || (a.seq === b.seq && a.block + a.count < b.block), `round ${round}: runs in seq order, maximal`)
    }
    const dead: number[] = got.dead!.toArray()
    t.same(dead, want.dead.flat(), `round ${round}: dead versions, in index order`)
    t.equal(got.deadCount, want.dead.length, `round ${round}: dead count`)

    // Keeping at most a few: the list is dropped past that, the count and horizon stay; the
    // second walk hands the same versions over in batches, each taken before the walk goes on.
    const keep = rng.range(0, 6)
    const capped = await analyzeVersions(walk(versions, rng), j, keep)
    t.equal(capped.dead === undefined, want.dead.length > keep, `round ${round}: list kept only up to ${keep}`)
    t.equal(capped.deadCount, want.dead.length, `round ${round}: capped count`)
    t.equal(capped.horizon, got.horizon, `round ${round}: capped horizon`)
    const batch = rng.range(1, 8)
    const batches: number[][] = []
    let taking = false
    const found = await deadVersionBatches(walk(versions, rng), j, batch, async list => {
      t.notOk(taking, 'one batch at a time')
      taking = true
      await new Promise(resolve => setImmediate(resolve))
      batches.push(list.toArray())
      taking = false
    })
    t.equal(found, want.dead.length, `round ${round}: second walk's count`)
    t.same(batches.flat(), want.dead.flat(), `round ${round}: second walk's dead versions, in index order`)
    // A batch ends after the index read that filled it (walk yields at most 19 versions).
    t.ok(batches.every(b => b.length > 0 && b.length / 2 < batch + 20), `round ${round}: batches of ${batch} or a read more`)
    for (const p of wantPositions.slice(0, 5)) t.ok(anyLiveIn(got.live, p, p + 1), `round ${round}: position ${p} is live`)

    // Details of the versions in every other 16 KiB of the log.
    const chosen = (p: number): boolean => Math.floor(p / 16384) % 2 === 0
    const details = await liveDetails(walk(versions, rng), j, chosen)
    const wantDetails = want.live.filter(v => v[2] >= 0 && chosen(v[2])).sort((a, b) => a[2] - b[2])
    t.same([...details.positions], wantDetails.map(v => v[2]), `round ${round}: chosen positions`)
    t.same([...details.blocks], wantDetails.map(v => v[0]), `round ${round}: their blocks`)
    t.same([...details.seqs], wantDetails.map(v => v[1]), `round ${round}: their seqs`)
    t.same([...details.crcs], wantDetails.map(v => v[3]), `round ${round}: their CRCs`)
  }
})

t.test('two needed versions at one log position are refused, not sorted into one slot', async t => {
  const versions: Version[] = [[0, 1, 8192, 1], [1, 2, 8192, 2]]
  await t.rejects(analyzeVersions(walk(versions), { cuts: [], range: { from: 1, to: 2 }, fenceSeq: 2, windowStart: Number.MAX_SAFE_INTEGER }), { code: 'IO', message: /two needed versions at log position 8192/ })
})
