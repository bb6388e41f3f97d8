#!/usr/bin/env python3
# Experiment (native-notes/page-cache.md, "RWF_DONTCACHE"), not part of `make bench`: a log's
# appends, 1 MiB pwritev into 64 MiB files, a thread fdatasyncing the files written since every
# 256 MiB (a checkpoint beside the writes). Modes: fadvise (logdisk today: DONTNEED after each
# file's sync), dontcache (pwritev2 RWF_DONTCACHE, Linux 6.14+, no fadvise), plain (neither).
#   python3 bench/dontcache-append.py fadvise|dontcache|plain GIB
import os, sys, time, resource, threading, queue
mode = sys.argv[1]; total = int(sys.argv[2]) << 30
d = '/work/dct'; os.makedirs(d, exist_ok=True)
buf = os.urandom(1 << 20)
SEG = 64 << 20
flags = 0x80 if mode == 'dontcache' else 0
t0 = time.time(); r0 = resource.getrusage(resource.RUSAGE_SELF)
written = 0; seg = 0; unsynced = []
lat = []
q = queue.Queue()
def syncer():
    while True:
        files = q.get()
        if files is None: return
        for f in files:
            os.fdatasync(f)
            if mode == 'fadvise': os.posix_fadvise(f, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(f)
th = threading.Thread(target=syncer); th.start()
fd = os.open(f'{d}/{seg}', os.O_WRONLY | os.O_CREAT, 0o644); off = 0
while written < total:
    if off + len(buf) > SEG:
        unsynced.append(fd); seg += 1; fd = os.open(f'{d}/{seg}', os.O_WRONLY | os.O_CREAT, 0o644); off = 0
    t = time.time()
    os.pwritev(fd, [buf], off, flags)
    lat.append(time.time() - t)
    off += len(buf); written += len(buf)
    if written % (256 << 20) == 0:
        q.put(unsynced); unsynced = []
q.put(None); th.join()
el = time.time() - t0; r1 = resource.getrusage(resource.RUSAGE_SELF)
lat.sort()
print(f'{mode}: {written / el / 1e6:.0f} MB/s, p99 write {lat[int(len(lat)*0.99)]*1000:.1f} ms, max {lat[-1]*1000:.0f} ms, user {r1.ru_utime-r0.ru_utime:.1f} sys {r1.ru_stime-r0.ru_stime:.1f} s')
os.system(f'rm -rf {d}')
