/**
 * restoreImage under the path it had before it moved to copy/restore.ts (the store library
 * knows nothing of copies): the reproduction scripts of ../shared/repro require it from here.
 * Nothing in src/ imports this file.
 */
export { restoreImage } from '../copy/restore'
