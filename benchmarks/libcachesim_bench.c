// Times one of libCacheSim's eviction algorithms on an in-memory stream of int64 column ids, every
// object of size 1, so that benchmarks/caches.py can put its requests/s, miss counts and hit flags
// beside dipsim's per-request path on the same stream and machine. The stream is read before the
// clock starts (libCacheSim's own cachesim binary would also time its trace reader). Belady gets
// each request's next-use position as next_access_vtime (INT64_MAX: never).
//
// Written against libCacheSim 0.3.5 (its version.txt; the source that the PyPI sdist
// libcachesim==0.3.5 vendors under src/libCacheSim), which has both S3-FIFOs:
//   s3fifo      -> S3FIFOv0_init (S3FIFOv0.c: the SOSP 2023 paper's algorithm; libCacheSim's S3FIFO.c
//                  until December 2024)
//   s3fifo-lcs  -> S3FIFO_init   (S3FIFO.c since December 2024: while nothing has been evicted, a
//                  full small queue sends new objects to the main queue)
// Both refuse objects as large as the small queue (10% of the capacity): with unit-size objects
// they cache nothing below a capacity of 20 (S3FIFOv0 stops below 10), so compare them from 20 on.
//
// Not part of dipsim's build: compile it against a libCacheSim build made elsewhere, e.g. with
// S=<libCacheSim source> and B=<its cmake build (Release, -DENABLE_TESTS=OFF -DBUILD_SHARED_LIBS=OFF)>:
//   gcc -O2 -o lcs_bench libcachesim_bench.c -I$S/libCacheSim/include $(pkg-config --cflags glib-2.0) \
//     $B/liblibCacheSim.a $(pkg-config --libs glib-2.0) -lzstd -lm -ldl -lpthread -lstdc++
//
// usage: lcs_bench ids.bin n_columns capacity lru|fifo|lfu|belady|s3fifo|s3fifo-lcs|arc [repeats [hits.bin]]
// prints: algo hits misses requests_per_cpu_second(millions, best of the repeats)
// hits.bin, if named: one byte per request (1: hit), from the last repeat
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <stdint.h>
#include "libCacheSim.h"

// CPU time of the process, as benchmarks/caches.py measures dipsim's: other jobs on a shared machine
// take turns on its cores, and wall time would count their turns
static double now(void) { struct timespec t; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

static cache_t *make(const char *algo, common_cache_params_t p) {
  if (!strcmp(algo, "lru")) return LRU_init(p, NULL);
  if (!strcmp(algo, "fifo")) return FIFO_init(p, NULL);
  if (!strcmp(algo, "lfu")) return LFU_init(p, NULL);
  if (!strcmp(algo, "belady")) return Belady_init(p, NULL);
  if (!strcmp(algo, "s3fifo")) return S3FIFOv0_init(p, NULL);
  if (!strcmp(algo, "s3fifo-lcs")) return S3FIFO_init(p, NULL);
  if (!strcmp(algo, "arc")) return ARC_init(p, NULL);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 5) { fprintf(stderr, "usage: %s ids.bin n_columns capacity algo [repeats [hits.bin]]\n", argv[0]); return 2; }
  FILE *f = fopen(argv[1], "rb");
  if (!f) { perror(argv[1]); return 2; }
  fseek(f, 0, SEEK_END); long R = ftell(f) / 8; fseek(f, 0, SEEK_SET);
  int64_t *ids = malloc(R * 8 + 8);
  if (fread(ids, 8, R, f) != (size_t)R) { fprintf(stderr, "short read of %s\n", argv[1]); return 2; }
  fclose(f);
  long N = atol(argv[2]); long C = atol(argv[3]); const char *algo = argv[4];
  int reps = argc > 5 ? atoi(argv[5]) : 3;
  int64_t *nxt = malloc(R * 8 + 8); int64_t *last = malloc(N * 8);
  unsigned char *flags = malloc(R + 1);
  for (long n = 0; n < N; n++) last[n] = INT64_MAX;
  for (long i = R - 1; i >= 0; i--) { nxt[i] = last[ids[i]]; last[ids[i]] = i; }
  double best = 1e30; long hits = 0;
  for (int r = 0; r < reps; r++) {
    common_cache_params_t p = default_common_cache_params();
    p.cache_size = C; p.hashpower = 20;
    cache_t *c = make(algo, p);
    if (!c) { fprintf(stderr, "unknown %s\n", algo); return 2; }
    request_t *req = new_request();
    req->obj_size = 1;
    hits = 0;
    double t0 = now();
    for (long i = 0; i < R; i++) {
      req->obj_id = ids[i] + 1;   // ids from 1 (0 is reserved in some hash tables)
      req->next_access_vtime = nxt[i];
      bool h = c->get(c, req);
      flags[i] = h;
      hits += h;
    }
    double dt = now() - t0;
    if (dt < best) best = dt;
    free_request(req);
    c->cache_free(c);
  }
  if (argc > 6) {
    FILE *o = fopen(argv[6], "wb");
    if (!o || fwrite(flags, 1, R, o) != (size_t)R) { perror(argv[6]); return 2; }
    fclose(o);
  }
  printf("%s %ld %ld %.3f\n", algo, hits, R - hits, R / best / 1e6);
  return 0;
}
