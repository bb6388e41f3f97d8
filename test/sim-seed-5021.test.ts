import { seedPasses } from './helpers/sim-seed'

/**
 * Found at the end of the session of 2026-12-02 by `SEEDS=60 SEED=5000 make simulate` (the
 * options drawn from the seed: 2 copies on 3 volumes, archive off, history kept forever):
 * seed 5021 fails in phase 5 with "the current image changed across a rebuild (blocks 60, 78,
 * 146, ...)": after compactions that move versions, a mirror repair, a drain of v0, a power
 * loss and clean reopens, deleting the index and rebuilding it from the log gives another
 * current image than the index had. It fails the same way on the code before this session
 * (4aac7c0). The cause: the power loss left segment 1 with a header and no entry (the log went
 * on in segment 2, made ahead), compaction then recycled segment 0; a full rebuild read the
 * empty segment 1 to a clean end, which turned off the gap accepted at the start of the log
 * (bc34ec9), so segment 2's first entry (seq 4, expected 1) was taken for damage and nothing
 * of the log was replayed. A gap after such an empty segment is now accepted when the log
 * records the entry before it as flushed (recovery.ts acceptFlushedGap).
 */
seedPasses(5021, {}, 'seed 5021: an index rebuild gives the same current image')
