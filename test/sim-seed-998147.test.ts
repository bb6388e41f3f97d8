import { seedPasses } from './helpers/sim-seed'

/**
 * Found by `SEEDS=150 SEED=998000` (archive on with bring-back, history.keep 0): seed 998147
 * failed in phase 17 with a restore meeting ENOENT on segment 1's local file. An archive pass
 * set segment 1 'archived' in memory and then its index commit failed (injected EIO), so the
 * local copy stayed, still named by the index on disk. A bring-back of segment 1 then failed
 * (ENOSPC writing its copy) and, cleaning up, removed the file of that name on the volume: the
 * local copy it had never made. After the reopen the index named a file that was gone. Fixed:
 * Placement.bringBack removes on failure only the copies it made.
 */
seedPasses(998147, {}, 'seed 998147: a failed bring-back leaves a local copy it did not make')
