import { seedPasses } from './helpers/sim-seed'

/**
 * Found by `SEEDS=100 SEED=13200050` with index rebuilds after power losses, drains that
 * discard the segment made ahead, and bring-back (2 copies on 3 volumes, archive on): seed
 * 13200120 failed in phase 22 with "seg-000000000004.log ends before block 260's data" (the
 * current image could not be read: an acknowledged write lost). It failed so on the simhunt
 * branch (049751a); on main after the merge of rss2 (50d3d32) its I/O steps go another way
 * and it passed, with the defect still there. In phase 22 a mirror repair read segment 4's
 * record ([v4, v3]; segment 4 current) and checked each copy's header; meanwhile a write to
 * segment 4 failed on v3 (injected EIO), the mirror dropped v3 and the write was
 * acknowledged from v4, and the check of v4 met an injected read EIO. The repair went on
 * from what it read first: v3, the copy that had fallen behind, was the one present; it
 * sealed segment 4, copied v3's file over v4's and recorded [v3, v4]. Fixed: a segment the
 * repair will copy is sealed first and judged again from its record as it is then, so a
 * dropped copy is never a source (test/repair-dropped-copy, which fails on the code before).
 * On main the seed passes either way, so this file keeps it as a run that passes, not as a
 * proof of the fix.
 */
seedPasses(13200120, { rebuildAfterPowerLoss: true, drainDiscardsNext: true, bringBack: true }, 'seed 13200120, rebuilds, drains discarding the next segment, bring-back: a repair racing a dropped copy loses nothing')
