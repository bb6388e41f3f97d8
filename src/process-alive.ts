import fs from 'node:fs'

/** Whether `pid` runs. A killed daemon whose parent never reaps it stays a zombie: dead. */
export function isAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch {
    return true // no /proc (macOS): trust kill(0)
  }
}
