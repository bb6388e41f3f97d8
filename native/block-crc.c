/*
 * block-crc.node: the CRC32C of each block of a buffer, four blocks at a time.
 *
 * Why: every block of every write carries its CRC32C (DESIGN.md's durability contract). With
 * @node-rs/crc32, one call per 4 KiB block, the event loop spent a third of its time on them
 * under sequential writes at ~1 GB/s (perf: 22 % of the daemon's samples, all on the main
 * thread): 3.6 GB/s per core, one dependent chain of crc32 instructions per block, plus a
 * call per block. The blocks' CRCs are independent, so four chains run side by side here and
 * the instruction's latency is hidden (Intel's "crc32 throughput 1 per cycle, latency 3").
 *
 * blockCrcs(data: Uint8Array, blockBytes: number, out: Uint32Array): fills out[i] with the
 * CRC32C (Castagnoli, initial and final value ~0, as @node-rs/crc32's crc32c(block)) of
 * data[i*blockBytes, (i+1)*blockBytes) for each i < out.length. Throws a TypeError when
 * data is shorter than out.length blocks or blockBytes is not a positive multiple of 8.
 * supported(): whether this CPU has SSE4.2 (else the caller keeps its own CRC).
 */
#include <stdint.h>
#include <string.h>
#include <node_api.h>

#if defined(__x86_64__)
#include <nmmintrin.h>

__attribute__((target("sse4.2")))
static uint32_t crc_one (const uint8_t *p, size_t bytes) {
  uint64_t c = 0xffffffffu;
  for (size_t k = 0; k < bytes; k += 8) {
    uint64_t v;
    memcpy(&v, p + k, 8);
    c = _mm_crc32_u64(c, v);
  }
  return ~(uint32_t)c;
}

__attribute__((target("sse4.2")))
static void crc_blocks (const uint8_t *p, size_t bytes, size_t n, uint32_t *out) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const uint8_t *a = p + i * bytes, *b = a + bytes, *c = b + bytes, *d = c + bytes;
    uint64_t ca = 0xffffffffu, cb = 0xffffffffu, cc = 0xffffffffu, cd = 0xffffffffu;
    for (size_t k = 0; k < bytes; k += 8) {
      uint64_t va, vb, vc, vd;
      memcpy(&va, a + k, 8);
      memcpy(&vb, b + k, 8);
      memcpy(&vc, c + k, 8);
      memcpy(&vd, d + k, 8);
      ca = _mm_crc32_u64(ca, va);
      cb = _mm_crc32_u64(cb, vb);
      cc = _mm_crc32_u64(cc, vc);
      cd = _mm_crc32_u64(cd, vd);
    }
    out[i] = ~(uint32_t)ca;
    out[i + 1] = ~(uint32_t)cb;
    out[i + 2] = ~(uint32_t)cc;
    out[i + 3] = ~(uint32_t)cd;
  }
  for (; i < n; i++) out[i] = crc_one(p + i * bytes, bytes);
}

static int have_sse42 (void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("sse4.2");
}
#else
static void crc_blocks (const uint8_t *p, size_t bytes, size_t n, uint32_t *out) { (void)p; (void)bytes; (void)n; (void)out; }
static int have_sse42 (void) { return 0; }
#endif

/* Asked once, when the module loads: blockCrcs runs for every write. */
static int sse42;

static napi_value block_crcs (napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_typedarray_type dtype, otype;
  size_t dlen, olen;
  void *data, *out;
  int64_t bytes;
  if (argc < 3 ||
      napi_get_typedarray_info(env, argv[0], &dtype, &dlen, &data, NULL, NULL) != napi_ok || dtype != napi_uint8_array ||
      napi_get_value_int64(env, argv[1], &bytes) != napi_ok ||
      napi_get_typedarray_info(env, argv[2], &otype, &olen, &out, NULL, NULL) != napi_ok || otype != napi_uint32_array) {
    napi_throw_type_error(env, NULL, "blockCrcs(data: Uint8Array, blockBytes: number, out: Uint32Array)");
    return NULL;
  }
  if (bytes <= 0 || bytes % 8 != 0 || (uint64_t)dlen < (uint64_t)olen * (uint64_t)bytes) {
    napi_throw_type_error(env, NULL, "blockCrcs: blockBytes must be a positive multiple of 8, and data hold out.length blocks");
    return NULL;
  }
  if (!sse42) {
    napi_throw_error(env, NULL, "blockCrcs: this CPU has no SSE4.2");
    return NULL;
  }
  crc_blocks(data, (size_t)bytes, olen, out);
  return NULL;
}

static napi_value supported (napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
  napi_get_boolean(env, sse42 != 0, &result);
  return result;
}

NAPI_MODULE_INIT () {
  napi_value fn;
  sse42 = have_sse42();
  napi_create_function(env, "blockCrcs", NAPI_AUTO_LENGTH, block_crcs, NULL, &fn);
  napi_set_named_property(env, exports, "blockCrcs", fn);
  napi_create_function(env, "supported", NAPI_AUTO_LENGTH, supported, NULL, &fn);
  napi_set_named_property(env, exports, "supported", fn);
  return exports;
}
