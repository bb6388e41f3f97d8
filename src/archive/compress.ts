import { promisify } from 'node:util'
import zlib from 'node:zlib'
import { LogdiskError } from '../errors'

/** The compression codecs of the archive formats (codec.ts LDARCH1, framed.ts LDARCH2); the choice is explained in codec.ts. */
export const ArchiveCodec = {
  gzip: 1,
  brotli: 2
} as const
export type ArchiveCodec = typeof ArchiveCodec[keyof typeof ArchiveCodec]

/** Brotli quality of new archives (0-11); the choice is measured in codec.ts. */
const BROTLI_QUALITY = 4
const GZIP_LEVEL = 6

export const CODEC_NAMES: Record<number, string> = { [ArchiveCodec.gzip]: 'gzip', [ArchiveCodec.brotli]: 'brotli' }

const gzip = promisify(zlib.gzip)
const gunzip = promisify(zlib.gunzip)
const brotliCompress = promisify(zlib.brotliCompress)
const brotliDecompress = promisify(zlib.brotliDecompress)

/** The one error of every archive format for bytes that are not what was stored (CORRUPT). */
export const archiveCorrupt = (message: string, cause?: unknown): LogdiskError => new LogdiskError('CORRUPT', `archive: ${message}`, cause)

/** Compresses `data` with one codec: LDARCH1's body, and each frame of LDARCH2 (framed.ts). */
export async function compressWith (codec: ArchiveCodec, data: Buffer): Promise<Buffer> {
  switch (codec) {
    case ArchiveCodec.gzip:
      return await gzip(data, { level: GZIP_LEVEL })
    case ArchiveCodec.brotli:
      return await brotliCompress(data, {
        params: {
          [zlib.constants.BROTLI_PARAM_QUALITY]: BROTLI_QUALITY,
          [zlib.constants.BROTLI_PARAM_SIZE_HINT]: data.length
        }
      })
    default:
      throw new LogdiskError('BAD_ARGUMENT', `archive: unknown codec ${String(codec)} (known: 1 gzip, 2 brotli)`)
  }
}

/**
 * Decompresses `body`, inflating no further than `originalBytes` (a body that decompresses to
 * more is reported as corrupt instead of being inflated without bound; zlib needs a limit of
 * at least 1). Throws CORRUPT.
 */
export async function decompressWith (codec: ArchiveCodec, body: Buffer, originalBytes: number): Promise<Buffer> {
  const name = CODEC_NAMES[codec]
  const maxOutputLength = Math.max(1, originalBytes)
  try {
    return codec === ArchiveCodec.gzip
      ? await gunzip(body, { maxOutputLength })
      : await brotliDecompress(body, { maxOutputLength })
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    if (e.code === 'ERR_BUFFER_TOO_LARGE') {
      throw archiveCorrupt(`the ${name} data decompresses to more than the ${originalBytes} bytes the header declares`, err)
    }
    throw archiveCorrupt(`the ${name} data is damaged: ${e.message}`, err)
  }
}
