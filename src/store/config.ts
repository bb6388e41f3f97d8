import fs from 'node:fs'
import path from 'node:path'
import crypto from 'node:crypto'
import { LogdiskError } from '../errors'
import { exactSize, formatBytes } from '../size-text'
import { DEFAULT_BLOCK_BYTES, DEFAULT_SEGMENT_BYTES, MAX_ENTRY_BLOCKS, READABLE_STORE_FORMATS, SEGMENT_HEADER_BYTES, STORE_FORMAT_VERSION } from './format'

/** store.json: what a store is. Written once at create; versioned (docs/FORMAT.md). */
export interface StoreConfig {
  format: number
  uuid: string
  sizeBytes: number
  blockBytes: number
  segmentBytes: number
  createdAt: string
}

export interface CreateOptions {
  sizeBytes: number
  blockBytes?: number
  segmentBytes?: number
  /** The new store's uuid, when its maker must name it before it exists (a clone: clone.ts); a fresh one otherwise. */
  uuid?: string
}

const UUID_TEXT = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

export const CONFIG_FILE = 'store.json'

/**
 * Room a command that writes needs on the store directory's filesystem for the index (LevelDB's
 * log and tables), store.json and the other small files: checked before it starts (the CLI)
 * and counted by adopt's room check.
 */
export const SMALL_FILES_ROOM_BYTES = 4 * 1024 * 1024

export function validateCreateOptions (opts: CreateOptions): Omit<StoreConfig, 'uuid' | 'createdAt' | 'format'> {
  const blockBytes = opts.blockBytes ?? DEFAULT_BLOCK_BYTES
  const segmentBytes = opts.segmentBytes ?? DEFAULT_SEGMENT_BYTES
  const { sizeBytes } = opts
  if (!Number.isSafeInteger(blockBytes) || blockBytes < 512 || blockBytes > 1024 * 1024 || (blockBytes & (blockBytes - 1)) !== 0) {
    throw new LogdiskError('BAD_ARGUMENT', `block size ${exactSize(blockBytes)} must be a power of two between 512 bytes and 1 MiB`)
  }
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % blockBytes !== 0) {
    throw new LogdiskError('BAD_ARGUMENT', `size ${exactSize(sizeBytes)} must be a positive multiple of the block size (${formatBytes(blockBytes)})`)
  }
  // A segment must hold at least one maximal entry besides its header page.
  const minSegment = SEGMENT_HEADER_BYTES + 64 + MAX_ENTRY_BLOCKS * (blockBytes + 4)
  if (!Number.isSafeInteger(segmentBytes) || segmentBytes < minSegment || segmentBytes > 4 * 1024 ** 3) {
    // The bounds in bytes: as sizes both ends of "1.0 MiB must be at least 1.0 MiB" read alike (helper-59).
    throw new LogdiskError('BAD_ARGUMENT', `segment size ${exactSize(segmentBytes)} must be between ${minSegment} bytes and 4 GiB for block size ${formatBytes(blockBytes)} (the smallest in whole MiB: ${Math.ceil(minSegment / 1024 ** 2)}M)`)
  }
  return { sizeBytes, blockBytes, segmentBytes }
}

export function newConfig (opts: CreateOptions): StoreConfig {
  if (opts.uuid !== undefined && !UUID_TEXT.test(opts.uuid)) throw new LogdiskError('BAD_ARGUMENT', `uuid "${opts.uuid}" is not a lowercase RFC 4122 uuid`)
  return { format: STORE_FORMAT_VERSION, uuid: opts.uuid ?? crypto.randomUUID(), ...validateCreateOptions(opts), createdAt: new Date().toISOString() }
}

export function readConfig (dir: string): StoreConfig {
  const file = path.join(dir, CONFIG_FILE)
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new LogdiskError('STORE_NOT_FOUND', `no store at ${dir} (create one with: logdisk create ${dir} --size 1G)`, err)
    }
    throw new LogdiskError('BAD_CONFIG', `cannot read ${file}: ${(err as Error).message}`, err)
  }
  let config: StoreConfig
  try {
    config = JSON.parse(text)
  } catch (err) {
    throw new LogdiskError('BAD_CONFIG', `${file} is not valid JSON`, err)
  }
  if (typeof config.format !== 'number') throw new LogdiskError('BAD_CONFIG', `${file}: format is ${JSON.stringify(config.format)}, not a number; put back the value the store was made with`)
  if (!READABLE_STORE_FORMATS.includes(config.format)) {
    throw new LogdiskError('BAD_CONFIG', `${file} has format ${config.format}; this logdisk reads formats ${READABLE_STORE_FORMATS.slice(0, -1).join(', ')} and ${READABLE_STORE_FORMATS[READABLE_STORE_FORMATS.length - 1]} (a newer logdisk wrote it?)`)
  }
  // Named as store.json's: "size 64.0 MiB must be a multiple of 4.0 KiB" of a string that
  // is one, without a word of the file, misled (helper-62).
  for (const key of ['sizeBytes', 'blockBytes', 'segmentBytes'] as const) {
    if (typeof config[key] !== 'number') throw new LogdiskError('BAD_CONFIG', `${file}: ${key} is ${JSON.stringify(config[key])}, not a number; put back the value the store was made with`)
  }
  try {
    validateCreateOptions(config)
  } catch (err) {
    throw new LogdiskError('BAD_CONFIG', `${file}: ${(err as Error).message}; put back the value the store was made with`, err)
  }
  return config
}

/** Atomic publish: write a temporary file, fsync, rename, fsync the directory. */
export function writeFileAtomic (file: string, data: string | Buffer): void {
  const tmp = `${file}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}` // writers never share a temp file
  const fd = fs.openSync(tmp, 'w', 0o644)
  try {
    fs.writeFileSync(fd, data)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  fs.renameSync(tmp, file)
  const dirFd = fs.openSync(path.dirname(file), 'r')
  try {
    fs.fsyncSync(dirFd)
  } finally {
    fs.closeSync(dirFd)
  }
}

export function writeConfig (dir: string, config: StoreConfig): void {
  writeFileAtomic(path.join(dir, CONFIG_FILE), JSON.stringify(config, null, 2) + '\n')
}
