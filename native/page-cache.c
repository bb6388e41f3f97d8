/*
 * page-cache.node: posix_fadvise(POSIX_FADV_DONTNEED and WILLNEED), preadv2(RWF_NOWAIT), a
 * read(2) that does not throw, madvise(MADV_DONTNEED) and malloc_trim for Node, which has no
 * binding for any of them.
 *
 * Why: a log writes every version to fresh page-cache pages. On a VM whose balloon reports
 * free memory to the host, a page the guest has not used lately costs a host fault on first
 * touch, and the copy into it was a third of the daemon's time under sequential writes. Once
 * a sealed segment is fdatasync'd its pages are clean copies of what is on disk; dropping them
 * puts them back on the free lists while they are hot, and the next segment's writes reuse
 * them (measured: 3 GiB in 1 MiB writes into 64 MiB files, 419 MiB/s with an fdatasync per
 * file, 1357-1497 MiB/s with an fdatasync and this per file; native-notes/page-cache.md).
 *
 * dropCache(fd, offset, length, callback): runs on the libuv thread pool; callback(errno)
 * with 0 on success. Advisory: it never changes a byte of the file.
 *
 * warmCache(fd, offset, length, callback): the same on the pool, the other way: queues reads
 * of the range's data into the page cache (length 0: to the end of the file; see warm). Why:
 * random reads of an image whose blocks the page cache does not hold wait for one disk request
 * each, scattered over the segments they were written in; reading a segment that keeps missing
 * in one go served 33,000 -> 43,000-45,000 random 4 KiB reads at depth 16 from a cold cache
 * (src/store/segment-warmer.ts says when; native-notes/page-cache.md).
 *
 * readCached(fd, buffer, offset, length, position): preadv2(RWF_NOWAIT) into buffer[offset..]
 * right on the calling thread: only what the page cache holds is read, nothing waits for a
 * disk. Returns the bytes read (fewer than asked, or 0: the rest is not cached), or -errno
 * (-EAGAIN: nothing of it is cached; -EOPNOTSUPP: the file system cannot say). Why: a read
 * at a queue depth above 1 went through the libuv thread pool even when its block was in the
 * page cache, about four futex calls and two thread wake-ups for a copy of 4 KiB (strace);
 * cached reads made at once served 1.3-1.5x the random 4 KiB reads at depth 16
 * (native-notes/page-cache.md), and one that misses still goes to the pool.
 *
 * readNow(fd, buffer, offset, length): read(2) into buffer[offset..] on the calling thread;
 * returns the bytes read or -errno. Why: the FUSE channel polls its non-blocking /dev/fuse
 * for the next request after a reply (src/fuse/devfuse/polled-channel.ts), and most such
 * reads find nothing yet: Node's readSync throws on EAGAIN (~4.5 us each, the error built),
 * this returns -EAGAIN for the price of the system call.
 *
 * releasePages(buffer): madvise(MADV_DONTNEED) over the whole pages inside buffer, on the
 * calling thread; returns the bytes released or -errno. The buffer stays valid: its released
 * pages read as zeros and become resident again when next touched. Why: the FUSE channel's
 * request buffers (1 MiB and more each, one per request in flight) stay resident once a burst
 * of large writes touched them, 32-36 MiB of the daemon's peak in the bench, while a
 * compaction runs with every one of them idle (src/fuse/devfuse/polled-channel.ts). Only for
 * memory no one reads meanwhile: the caller's, idle.
 *
 * trimHeap(callback): malloc_trim(0) on the thread pool; callback(1 when memory went back to
 * the system, else 0). The daemon calls it every few seconds (src/daemon/heap-trim.ts):
 * glibc keeps freed heap memory, and LevelDB's work in each compaction left the daemon's
 * resident size a step higher each time (3 cycles of writes and compaction: resident after
 * them 287 MiB without, 208 MiB with it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <stdint.h>
#include <malloc.h>
#include <stdlib.h>
#include <unistd.h>
#include <node_api.h>

/* What a job on the thread pool does. */
enum { DROP_PAGES, TRIM_HEAP, WARM_PAGES };

typedef struct {
  int kind; /* DROP_PAGES or WARM_PAGES: posix_fadvise; TRIM_HEAP: malloc_trim */
  int fd;
  int64_t offset;
  int64_t length;
  int result;
  napi_ref callback;
  napi_async_work work;
} Drop;

/* posix_fadvise(WILLNEED) of [from, to) a slice at a time (see warm). */
#define WARM_SLICE ((int64_t)4 << 20)
static int advise_slices (int fd, int64_t from, int64_t to) {
  for (int64_t at = from; at < to; at += WARM_SLICE) {
    int err = posix_fadvise(fd, (off_t)at, (off_t)(to - at < WARM_SLICE ? to - at : WARM_SLICE), POSIX_FADV_WILLNEED);
    if (err != 0) return err;
  }
  return 0;
}

/*
 * Queues reads of the data in [offset, offset + length) (length 0: to the end of the file) into
 * the page cache: posix_fadvise(WILLNEED) over each extent that holds data (SEEK_DATA /
 * SEEK_HOLE: a compacted segment's punched holes would only fill the cache with zeros), a
 * slice at a time, because the kernel reads at most the device's largest request per call
 * (force_page_cache_ra clamps to max(io_pages, ra_pages): 8 MiB of a 64 MiB segment here when
 * asked for the whole file at once). Each call only queues the reads; none waits for them.
 */
static int warm (int fd, int64_t offset, int64_t length) {
  if (length == 0) {
    struct stat st;
    if (fstat(fd, &st) != 0) return errno;
    length = (int64_t)st.st_size - offset;
  }
  int64_t end = offset + length;
  for (int64_t at = offset; at < end;) {
    off_t data = lseek(fd, (off_t)at, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) return 0; /* no data past `at` */
      return errno == EINVAL ? advise_slices(fd, at, end) : errno; /* no SEEK_DATA here: all of it */
    }
    if (data >= end) return 0;
    off_t hole = lseek(fd, data, SEEK_HOLE);
    if (hole < 0) return errno;
    int64_t stop = hole < end ? (int64_t)hole : end;
    int err = advise_slices(fd, data, stop);
    if (err != 0) return err;
    at = stop;
  }
  return 0;
}

static void run (napi_env env, void *data) {
  Drop *d = data;
  (void)env;
  if (d->kind == TRIM_HEAP) d->result = malloc_trim(0);
  else if (d->kind == WARM_PAGES) d->result = warm(d->fd, d->offset, d->length);
  else d->result = posix_fadvise(d->fd, (off_t)d->offset, (off_t)d->length, POSIX_FADV_DONTNEED);
}

static void done (napi_env env, napi_status status, void *data) {
  Drop *d = data;
  napi_value cb, global, arg;
  napi_get_reference_value(env, d->callback, &cb);
  napi_get_global(env, &global);
  napi_create_int32(env, status == napi_ok ? d->result : ECANCELED, &arg);
  napi_call_function(env, global, cb, 1, &arg, NULL);
  napi_delete_reference(env, d->callback);
  napi_delete_async_work(env, d->work);
  free(d);
}

/* A job for the thread pool: NULL, with the exception thrown, when out of memory. */
static Drop *new_job (napi_env env, int kind) {
  Drop *d = calloc(1, sizeof *d);
  if (d == NULL) napi_throw_error(env, NULL, "out of memory");
  else d->kind = kind;
  return d;
}

/* Queues `d` on the thread pool; `callback` gets its result (done). */
static void queue_job (napi_env env, Drop *d, napi_value callback, const char *what) {
  napi_value name;
  napi_create_reference(env, callback, 1, &d->callback);
  napi_create_string_utf8(env, what, NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, run, done, d, &d->work);
  napi_queue_async_work(env, d->work);
}

/* dropCache / warmCache(fd, offset, length, callback): posix_fadvise DONTNEED / WILLNEED on the pool. */
static napi_value advise (napi_env env, napi_callback_info info, int kind, const char *what, const char *usage) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 4) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  Drop *d = new_job(env, kind);
  if (d == NULL) return NULL;
  if (napi_get_value_int32(env, argv[0], &d->fd) != napi_ok ||
      napi_get_value_int64(env, argv[1], &d->offset) != napi_ok ||
      napi_get_value_int64(env, argv[2], &d->length) != napi_ok) {
    free(d);
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  queue_job(env, d, argv[3], what);
  return NULL;
}

static napi_value drop_cache (napi_env env, napi_callback_info info) {
  return advise(env, info, DROP_PAGES, "logdisk.dropCache", "dropCache(fd, offset, length, callback): fd, offset and length numbers");
}

static napi_value warm_cache (napi_env env, napi_callback_info info) {
  return advise(env, info, WARM_PAGES, "logdisk.warmCache", "warmCache(fd, offset, length, callback): fd, offset and length numbers");
}

static napi_value trim_heap (napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1) {
    napi_throw_type_error(env, NULL, "trimHeap(callback)");
    return NULL;
  }
  Drop *d = new_job(env, TRIM_HEAP);
  if (d == NULL) return NULL;
  queue_job(env, d, argv[0], "logdisk.trimHeap");
  return NULL;
}

static napi_value read_cached (napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  int64_t offset, length, position;
  void *data;
  size_t size;
  if (argc < 5 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_buffer_info(env, argv[1], &data, &size) != napi_ok ||
      napi_get_value_int64(env, argv[2], &offset) != napi_ok ||
      napi_get_value_int64(env, argv[3], &length) != napi_ok ||
      napi_get_value_int64(env, argv[4], &position) != napi_ok ||
      offset < 0 || length < 0 || position < 0 || (uint64_t)offset + (uint64_t)length > size) {
    napi_throw_type_error(env, NULL, "readCached(fd, buffer, offset, length, position): numbers within the buffer");
    return NULL;
  }
  struct iovec iov = { (char *)data + offset, (size_t)length };
  ssize_t n = preadv2(fd, &iov, 1, (off_t)position, RWF_NOWAIT);
  napi_value out;
  napi_create_int64(env, n >= 0 ? (int64_t)n : -(int64_t)errno, &out);
  return out;
}

static napi_value read_now (napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  int64_t offset, length;
  void *data;
  size_t size;
  if (argc < 4 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_buffer_info(env, argv[1], &data, &size) != napi_ok ||
      napi_get_value_int64(env, argv[2], &offset) != napi_ok ||
      napi_get_value_int64(env, argv[3], &length) != napi_ok ||
      offset < 0 || length < 0 || (uint64_t)offset + (uint64_t)length > size) {
    napi_throw_type_error(env, NULL, "readNow(fd, buffer, offset, length): numbers within the buffer");
    return NULL;
  }
  ssize_t n = read(fd, (char *)data + offset, (size_t)length);
  napi_value out;
  napi_create_int64(env, n >= 0 ? (int64_t)n : -(int64_t)errno, &out);
  return out;
}

static napi_value release_pages (napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *data;
  size_t size;
  if (argc < 1 || napi_get_buffer_info(env, argv[0], &data, &size) != napi_ok) {
    napi_throw_type_error(env, NULL, "releasePages(buffer)");
    return NULL;
  }
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t start = ((uintptr_t)data + page - 1) & ~(page - 1);
  uintptr_t end = ((uintptr_t)data + size) & ~(page - 1);
  int64_t released = 0;
  if (end > start) released = madvise((void *)start, end - start, MADV_DONTNEED) == 0 ? (int64_t)(end - start) : -(int64_t)errno;
  napi_value out;
  napi_create_int64(env, released, &out);
  return out;
}

NAPI_MODULE_INIT () {
  napi_value fn;
  napi_create_function(env, "readNow", NAPI_AUTO_LENGTH, read_now, NULL, &fn);
  napi_set_named_property(env, exports, "readNow", fn);
  napi_create_function(env, "readCached", NAPI_AUTO_LENGTH, read_cached, NULL, &fn);
  napi_set_named_property(env, exports, "readCached", fn);
  napi_create_function(env, "dropCache", NAPI_AUTO_LENGTH, drop_cache, NULL, &fn);
  napi_set_named_property(env, exports, "dropCache", fn);
  napi_create_function(env, "warmCache", NAPI_AUTO_LENGTH, warm_cache, NULL, &fn);
  napi_set_named_property(env, exports, "warmCache", fn);
  napi_create_function(env, "releasePages", NAPI_AUTO_LENGTH, release_pages, NULL, &fn);
  napi_set_named_property(env, exports, "releasePages", fn);
  napi_create_function(env, "trimHeap", NAPI_AUTO_LENGTH, trim_heap, NULL, &fn);
  napi_set_named_property(env, exports, "trimHeap", fn);
  return exports;
}
