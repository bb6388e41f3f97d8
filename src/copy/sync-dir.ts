import fs from 'node:fs'

/** fsyncs a directory: a file created or renamed in it is durable only after this. */
export async function syncDir (dir: string): Promise<void> {
  const d = await fs.promises.open(dir, 'r')
  try {
    await d.sync()
  } finally {
    await d.close()
  }
}
