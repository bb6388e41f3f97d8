import t from 'tap'
import { PairMap } from '../src/store/pair-map'
import { Rng } from '../src/testing/rng'

/**
 * PairMap stands in for a Map keyed by `${chunk}:${seq}` in a commit (history-changes.ts,
 * IndexDb.commit): it must answer exactly as that map would, for seqs with one chunk, with
 * several, and for seqs and chunks past 32 bits.
 */
t.test('answers as a map keyed by the pair would', async t => {
  const rng = new Rng(7)
  const pairs = new PairMap<number>()
  const strings = new Map<string, number>()
  const seqs = [0, 1, 2, 3, 2 ** 31, 2 ** 32 + 5, 2 ** 52]
  const chunks = [0, 1, 2, 63, 2 ** 31 + 1, 2 ** 40]
  for (let i = 0; i < 2000; i++) {
    const seq = seqs[rng.int(seqs.length)]
    const chunk = chunks[rng.int(chunks.length)]
    if (rng.int(3) === 0) {
      pairs.set(seq, chunk, i)
      strings.set(`${chunk}:${seq}`, i)
    }
    const q = [seqs[rng.int(seqs.length)], chunks[rng.int(chunks.length)]]
    t.equal(pairs.get(q[0], q[1]), strings.get(`${q[1]}:${q[0]}`), `get(${q[0]}, ${q[1]}) after ${i}`, { diagnostic: false })
  }
  let checked = 0
  for (const seq of seqs) for (const chunk of chunks) { t.equal(pairs.get(seq, chunk), strings.get(`${chunk}:${seq}`)); checked++ }
  t.equal(checked, seqs.length * chunks.length)
})

t.test('a second chunk of a seq keeps the first; overwriting keeps one value', async t => {
  const m = new PairMap<string>()
  t.equal(m.get(9, 0), undefined)
  m.set(9, 4, 'a')
  t.equal(m.get(9, 4), 'a')
  t.equal(m.get(9, 5), undefined, 'another chunk of the same seq is not there')
  t.equal(m.get(8, 4), undefined, 'the same chunk of another seq is not there')
  m.set(9, 4, 'b')
  t.equal(m.get(9, 4), 'b')
  m.set(9, 5, 'c')
  t.equal(m.get(9, 4), 'b', 'the first chunk survives the move to an inner map')
  t.equal(m.get(9, 5), 'c')
  m.set(9, 4, 'd')
  m.set(9, 6, 'e')
  t.same([m.get(9, 4), m.get(9, 5), m.get(9, 6), m.get(9, 7)], ['d', 'c', 'e', undefined])
})
