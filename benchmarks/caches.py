"""Per-request cache speed on streams from a real trace: dipsim's ``cache.run`` beside a plain
Python OrderedDict LRU and, when given, libCacheSim on the same streams and machine; with
libCacheSim also a request-by-request comparison on random streams over few ids.

    python benchmarks/caches.py [--trace PATH] [--keep 0.5] [--fraction 0.5] [--libcachesim BIN]
                                [--random-length 20000]

The streams come from a real SmolLM2-135M trace (default: the 1024-token capture of the sweeps,
made on first use, about a minute): DIP's masks (top ``keep`` of |x| or |h|) per token, each
token's columns requested in ascending index order, as ``step_model="sequential"`` would request
them. Three streams: the up/gate columns of the middle layer (576 ids), its down columns (1536)
and the up/gate columns of all 30 layers in one id space (17,280 ids: layer * 576 + column, the
layers of a token in order). The cache holds ``fraction`` of the ids.

For each stream it prints the OrderedDict LRU's requests/s, then per policy (lru, fifo, lfu,
belady, s3fifo, s3fifo-lcs, arc) dipsim's requests/s (best of three runs, each on a fresh cache)
and misses; every rate is requests per second of the process's CPU time (libCacheSim's too), so
that other jobs on a shared machine, which take turns on its cores, change the figures less; with ``--libcachesim`` also libCacheSim's requests/s and misses on the same stream,
the ratio, and whether the two agree on every request's hit flag.

``BIN`` is ``benchmarks/libcachesim_bench.c`` compiled against a build of libCacheSim 0.3.5 (see
that file; it is not part of dipsim). It maps ``s3fifo`` to libCacheSim's S3FIFOv0.c (the SOSP 2023
paper's algorithm; libCacheSim's S3FIFO.c until December 2024) and ``s3fifo-lcs`` to its S3FIFO.c
(the later rule). With it the script then compares every policy on random streams of
``caches.streams`` (every kind, 16-300 ids, capacities of 10-90% of them, ``--random-length``
requests each; 0 skips them) and prints, per policy, how many configurations have equal miss
counts and equal hit flags at every request. libCacheSim's S3-FIFOs cache nothing below a capacity
of 20 unit-size objects (their small queue must exceed an object), so they are compared from 20 on.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

POLICIES = ["lru", "fifo", "lfu", "belady", "s3fifo", "s3fifo-lcs", "arc"]   # all have a libCacheSim twin
S3FIFO_MIN = 20            # libCacheSim's S3-FIFOs cache nothing below this capacity (unit-size objects)
RANDOM_IDS = (16, 32, 64, 128, 300)
RANDOM_SHARES = (0.1, 0.25, 0.4, 0.6, 0.9)


def python_lru(stream: list[int], capacity: int) -> int:
    od: OrderedDict[int, None] = OrderedDict()
    misses = 0
    for x in stream:
        if x in od:
            od.move_to_end(x)
        else:
            misses += 1
            od[x] = None
            if len(od) > capacity:
                od.popitem(last=False)
    return misses


def streams(trace, keep: float) -> dict[str, tuple[np.ndarray, int]]:
    """name -> (ids, number of distinct ids) from DIP's masks of ``trace``."""
    from simulator.kernels import topk_rows

    def masks(kind, layer):
        s = trace.abs_layer(kind, layer, 0, trace.n_tokens)
        out = np.empty(s.shape, dtype=bool)
        topk_rows(s, max(1, round(keep * s.shape[1])), out)
        return out

    mid = trace.n_layers // 2
    out = {}
    for kind, name, n in [("x", "up/gate", trace.d_model), ("h", "down", trace.d_ff)]:
        t, c = np.nonzero(masks(kind, mid))
        out[f"{name} columns, layer {mid}"] = (c.astype(np.int64), n)
    per_layer = np.stack([masks("x", layer) for layer in range(trace.n_layers)], axis=1)  # [T, L, N]
    t, layer, c = np.nonzero(per_layer)
    out[f"up/gate columns, all {trace.n_layers} layers"] = ((layer * trace.d_model + c).astype(np.int64),
                                                          trace.n_layers * trace.d_model)
    return out


def dipsim_run(name: str, ids: np.ndarray, n: int, cap: int, repeats: int = 3) -> tuple[float, np.ndarray]:
    """Best requests/s of ``repeats`` runs on a fresh cache, and the hit flags."""
    from simulator import caches

    best = 0.0
    for _ in range(repeats):
        c = caches.make(name, n_layers=1, n_columns=n, capacity=cap)
        t0 = time.process_time()
        hits = c.run(ids)
        dt = time.process_time() - t0
        best = max(best, len(ids) / dt)
    return best, hits


def libcachesim_run(binary: str, ids: np.ndarray, name: str, n: int, cap: int, tmp: Path,
                    repeats: int = 3) -> tuple[float, np.ndarray]:
    """libCacheSim's best requests/s on ``ids`` and its hit flags (``libcachesim_bench.c``)."""
    path, flags = tmp / "ids.bin", tmp / "hits.bin"
    np.ascontiguousarray(ids, dtype=np.int64).tofile(path)
    out = subprocess.run([binary, str(path), str(n), str(cap), name, str(repeats), str(flags)], capture_output=True,
                         text=True, check=True).stdout.split()
    return float(out[3]) * 1e6, np.fromfile(flags, dtype=np.uint8).astype(bool)


def comparable(name: str, cap: int) -> bool:
    return cap >= S3FIFO_MIN or not name.startswith("s3fifo")


def random_comparisons(binary: str, length: int, tmp: Path) -> tuple[int, int, int]:
    """Every policy against libCacheSim on random streams over few ids, request by request; prints
    per policy the configurations and how many agree; returns (comparisons, equal misses, equal
    flags)."""
    from simulator.caches import streams as synthetic

    configs = [(kind, n, max(1, int(share * n))) for kind in synthetic.KINDS for n in RANDOM_IDS
               for share in RANDOM_SHARES]
    print(f"\nrandom streams: {len(synthetic.KINDS)} kinds ({', '.join(synthetic.KINDS)}) x ids {RANDOM_IDS} x "
          f"capacity shares {RANDOM_SHARES}, {length:,} requests each")
    totals = [0, 0, 0]
    for name in POLICIES:
        runs = same_miss = same_flags = 0
        differ = []
        for seed, (kind, n, cap) in enumerate(configs):
            if not comparable(name, cap):
                continue
            ids = synthetic.requests(kind, n, length, seed)
            _, ours = dipsim_run(name, ids, n, cap, repeats=1)
            _, theirs = libcachesim_run(binary, ids, name, n, cap, tmp, repeats=1)
            runs += 1
            same_miss += int(np.count_nonzero(~ours)) == int(np.count_nonzero(~theirs))
            same_flags += bool(np.array_equal(ours, theirs))
            if not np.array_equal(ours, theirs):
                differ.append(f"{kind} n={n} C={cap}: misses {np.count_nonzero(~ours)} vs "
                              f"{np.count_nonzero(~theirs)}, {np.count_nonzero(ours != theirs)} flags differ")
        print(f"  {name:11s} {runs:3d} configurations: misses equal in {same_miss}, hit flags equal at every "
              f"request in {same_flags}" + (f"; differ: {'; '.join(differ[:4])}" if differ else ""))
        totals = [totals[0] + runs, totals[1] + same_miss, totals[2] + same_flags]
    return totals[0], totals[1], totals[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", default=None, help="a trace file (default: the SmolLM2 1024-token capture)")
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--fraction", type=float, default=0.5, help="cache capacity as a share of the ids")
    ap.add_argument("--libcachesim", default=None, help="libcachesim_bench binary (see the docstring)")
    ap.add_argument("--random-length", type=int, default=20_000,
                    help="requests per random stream compared with libCacheSim (0: none)")
    a = ap.parse_args()

    import traces
    from simulator import caches
    from simulator.config import TraceSpec
    from simulator.sweep import trace_for

    trace = traces.load(a.trace) if a.trace else trace_for(TraceSpec(model="smollm2-135m", tokens=1024), progress=True)
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; numpy {np.__version__}; trace "
          f"{trace.meta.get('model')} {trace.n_tokens} tokens, {trace.n_layers} layers x ({trace.d_model} + "
          f"{trace.d_ff}) columns")
    for name in POLICIES:   # compile (or load) every kernel before timing
        caches.make(name, n_layers=1, n_columns=8, capacity=4).run(np.arange(8))
    tmp_dir = tempfile.TemporaryDirectory()
    tmp = Path(tmp_dir.name)
    rates: dict[str, list[float]] = {}
    real = [0, 0, 0]
    for sname, (ids, n) in streams(trace, a.keep).items():
        cap = int(a.fraction * n)
        t0 = time.process_time()
        py_miss = python_lru(ids.tolist(), cap)
        py_rate = len(ids) / (time.process_time() - t0)
        print(f"\n{sname}: {len(ids):,} requests over {n:,} ids, capacity {cap:,}")
        print(f"  plain Python OrderedDict LRU  {py_rate / 1e6:7.2f} M req/s   misses {py_miss:,}")
        for name in POLICIES:
            rate, hits = dipsim_run(name, ids, n, cap)
            miss = int(np.count_nonzero(~hits))
            line = (f"  {name:11s} dipsim {rate / 1e6:7.2f} M req/s ({rate / py_rate:5.1f}x OrderedDict)  "
                    f"misses {miss:,}")
            if name == "lru":
                assert miss == py_miss, "dipsim's LRU disagrees with the OrderedDict LRU"
            if a.libcachesim and comparable(name, cap):
                lrate, lhits = libcachesim_run(a.libcachesim, ids, name, n, cap, tmp)
                lmiss = int(np.count_nonzero(~lhits))
                same = bool(np.array_equal(hits, lhits))
                real = [real[0] + 1, real[1] + (lmiss == miss), real[2] + same]
                line += (f"  | libCacheSim {lrate / 1e6:6.2f} M req/s, misses {lmiss:,}  (dipsim {rate / lrate:4.1f}x; "
                         f"counts {'equal' if lmiss == miss else 'DIFFER'}, flags "
                         f"{'equal' if same else f'DIFFER at {np.count_nonzero(hits != lhits):,} requests'})")
            print(line)
            rates.setdefault(name, []).append(rate)
    low = min(rates["lru"])
    print(f"\nper-request LRU: {low / 1e6:.1f} M req/s at the slowest stream (target >= 5 M: "
          f"{'met' if low >= 5e6 else 'MISSED'})")
    if not a.libcachesim:
        print("libCacheSim not compared (give --libcachesim)")
        return
    rnd = random_comparisons(a.libcachesim, a.random_length, tmp) if a.random_length > 0 else (0, 0, 0)
    print(f"\nwith libCacheSim: trace streams {real[0]} comparisons, misses equal in {real[1]}, hit flags equal "
          f"in {real[2]}; random streams {rnd[0]} comparisons, misses equal in {rnd[1]}, hit flags equal in "
          f"{rnd[2]}")


if __name__ == "__main__":
    sys.exit(main())
