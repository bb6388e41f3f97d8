import { seedPasses } from './helpers/sim-seed'

/**
 * Found by `SEEDS=40 SEED=12346000` with bring-back on (2 copies on 2-3 volumes, archive on):
 * seed 12346031 failed in phase 18 with "segment 4 has no copy on any pool volume" (the
 * current image could not be read: acknowledged writes lost). It failed the same way on main
 * (1c59d7f). In phase 16 a drain of v2 chose v0 for segment 4 (then one copy, on v2), and a
 * mirror repair that took the maintenance lock first put the missing copy on v0; the move
 * then ran anyway, recorded segment 4 on [v0, v0] (one file counted as two copies) and deleted
 * the copy on v2. In phase 18 an injected ENOSPC on a write to v0's file dropped "one" copy,
 * which was both. Fixed: Placement.relocate refuses (BUSY) a move onto a volume that already
 * holds a copy, and drains choose again; verify reports a volume named twice, and repair
 * counts it as one copy (test/relocate-target-taken).
 */
seedPasses(12346031, { bringBack: true }, 'seed 12346031, bring-back on: a drain racing a mirror repair keeps two copies')
