#!/usr/bin/env node
// Experiment (native-notes/direct-io.md), not part of `make bench`: a log's appends written
// buffered or with O_DIRECT, as the daemon would write them. 1 MiB entries with a 1 KiB
// header, QD of them in flight, 64 MiB segment files preallocated ahead with `fallocate -n`,
// an fdatasync of the sealed files and the current one every second (a checkpoint; CP=0
// skips it). Direct writes are padded to 4 KiB and staged in a page-aligned
// WebAssembly.Memory. Prints MB/s, latency percentiles and the process's CPU.
//
//   node bench/direct-append.mjs direct|buf [seconds]   (env: QD=4, CP=0, DIR=/work/odq)
import fs from 'node:fs'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
const mode = process.argv[2], secs = Number(process.argv[3] ?? 6), QD = Number(process.env.QD ?? 4)
const dir = process.env.DIR ?? '/work/odq'
fs.mkdirSync(dir, { recursive: true })
const SEG = 64 << 20, ALIGN = 4096
const write = promisify(fs.write), writev = promisify(fs.writev), fdatasync = promisify(fs.fdatasync)
function prep (id) { return new Promise(r => execFile('fallocate', ['-n', '-l', String(SEG), `${dir}/${id}`], () => r())) }
let segId = 0, ahead = prep(0)
async function openSeg () { await ahead; const f = fs.openSync(`${dir}/${segId++}`, fs.constants.O_WRONLY | fs.constants.O_CREAT | (mode === 'direct' ? fs.constants.O_DIRECT : 0), 0o644); ahead = prep(segId); return f }
let fd = await openSeg(), tail = 0
const unsynced = []
const data = Buffer.alloc(1 << 20, 7), hdr = Buffer.alloc(64 + 1024, 1)
const stages = []
const takeStage = () => stages.pop() ?? Buffer.from(new WebAssembly.Memory({ initial: 32 }).buffer)
let stop = false, bytes = 0
const lat = []
let inflight = 0
const t0 = performance.now()
// each client write: one 1 MiB entry (header+table 1088 B), padded to 4 KiB in direct mode
async function one () {
  const t = performance.now()
  const len = hdr.length + data.length
  const padded = mode === 'direct' ? Math.ceil(len / ALIGN) * ALIGN : len
  if (tail + padded > SEG) { unsynced.push(fd); fd = await openSeg(); tail = 0 }
  const at = tail; tail += padded; const f = fd
  if (mode === 'direct') {
    const st = takeStage(); hdr.copy(st, 0); data.copy(st, hdr.length); st.fill(0, len, padded)
    await write(f, st, 0, padded, at); stages.push(st)
  } else {
    await writev(f, [hdr, data], at)
  }
  bytes += len; lat.push(performance.now() - t)
}
async function client () { while (!stop) await one() }
async function checkpoints () {
  while (!stop) {
    await new Promise(r => setTimeout(r, 1000))
    if (process.env.CP === '0') continue
    const list = unsynced.splice(0)
    for (const f of list) { await fdatasync(f); fs.closeSync(f) }
    await fdatasync(fd)
  }
}
const cp = checkpoints()
setTimeout(() => { stop = true }, secs * 1000)
const cpu0 = process.cpuUsage()
await Promise.all(Array.from({ length: QD }, client))
const el = (performance.now() - t0) / 1000, cpu = process.cpuUsage(cpu0)
await cp
lat.sort((a, b) => a - b)
const p = q => lat[Math.floor(lat.length * q)].toFixed(1)
fs.rmSync(dir, { recursive: true, force: true })
console.log(`${mode} QD${QD}: ${(bytes / el / 1e6).toFixed(0)} MB/s p50 ${p(0.5)} p99 ${p(0.99)} p99.9 ${p(0.999)} ms user ${(cpu.user / 1e6).toFixed(1)} sys ${(cpu.system / 1e6).toFixed(1)} s`)
