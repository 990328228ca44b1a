// Times one of libCacheSim's eviction algorithms on an in-memory stream of int64 column ids, every
// object of size 1, so that benchmarks/caches.py can put its requests/s and miss counts beside
// dipsim's per-request path on the same stream and machine. The stream is read before the clock
// starts (libCacheSim's own cachesim binary would also time its trace reader). Belady gets each
// request's next-use position as next_access_vtime (INT64_MAX: never).
//
// Not part of dipsim's build: compile it against a libCacheSim build made elsewhere (see the
// docstring of benchmarks/caches.py), e.g. with B=<libCacheSim build>/libCacheSim:
//   gcc -O2 -o lcs_bench libcachesim_bench.c -I<libCacheSim>/libCacheSim/include $(pkg-config --cflags glib-2.0) \
//     -Wl,--start-group $B/cache/libcachelib.a $B/cache/eviction/libevictionC.a \
//     $B/cache/eviction/libevictionCPP.a $B/cache/admission/libadmissionC.a \
//     $B/cache/admission/libadmissionCpp.a $B/cache/prefetch/libprefetchC.a \
//     $B/dataStructure/libdataStructure.a $B/dataStructure/hash/libds_hash.a $B/utils/libutils.a \
//     $B/traceReader/libtraceReader.a $B/profiler/libprofiler.a -Wl,--end-group \
//     $(pkg-config --libs glib-2.0) -lzstd -lm -lpthread -lstdc++
//
// usage: lcs_bench ids.bin n_columns capacity lru|fifo|lfu|belady|s3fifo|arc [repeats]
// prints: algo hits misses requests_per_second(millions, best of the repeats)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <stdint.h>
#include "libCacheSim.h"

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

int main(int argc, char **argv) {
  FILE *f = fopen(argv[1], "rb");
  fseek(f, 0, SEEK_END); long R = ftell(f) / 8; fseek(f, 0, SEEK_SET);
  int64_t *ids = malloc(R * 8); fread(ids, 8, R, f); fclose(f);
  long N = atol(argv[2]); long C = atol(argv[3]); const char *algo = argv[4];
  int reps = argc > 5 ? atoi(argv[5]) : 3;
  int64_t *nxt = malloc(R * 8); int64_t *last = malloc(N * 8);
  for (long n = 0; n < N; n++) last[n] = INT64_MAX;
  for (long i = R - 1; i >= 0; i--) { nxt[i] = last[ids[i]]; last[ids[i]] = i; }
  double best = 1e30; long hits = 0;
  for (int r = 0; r < reps; r++) {
    common_cache_params_t p = default_common_cache_params();
    p.cache_size = C; p.hashpower = 20;
    cache_t *c;
    if (!strcmp(algo, "lru")) c = LRU_init(p, NULL);
    else if (!strcmp(algo, "fifo")) c = FIFO_init(p, NULL);
    else if (!strcmp(algo, "lfu")) c = LFU_init(p, NULL);
    else if (!strcmp(algo, "belady")) c = Belady_init(p, NULL);
    else if (!strcmp(algo, "s3fifo")) c = S3FIFO_init(p, NULL);
    else if (!strcmp(algo, "arc")) c = ARC_init(p, NULL);
    else { fprintf(stderr, "unknown %s\n", algo); return 2; }
    request_t *req = new_request();
    req->obj_size = 1;
    hits = 0;
    double t0 = now();
    for (long i = 0; i < R; i++) {
      req->obj_id = ids[i] + 1;   // ids from 1 (0 is reserved in some hash tables)
      req->next_access_vtime = nxt[i];
      hits += c->get(c, req);
    }
    double dt = now() - t0;
    if (dt < best) best = dt;
    free_request(req);
    c->cache_free(c);
  }
  printf("%s %ld %ld %.3f\n", algo, hits, R - hits, R / best / 1e6);
  return 0;
}
