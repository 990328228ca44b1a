"""Per-request cache speed on streams from a real trace: dipsim's ``cache.run`` beside a plain
Python OrderedDict LRU and, when given, libCacheSim on the same streams and machine.

    python benchmarks/caches.py [--trace PATH] [--keep 0.5] [--fraction 0.5] [--libcachesim BIN]

The streams come from a real SmolLM2-135M trace (default: the 1024-token capture of the sweeps,
made on first use, about a minute): DIP's masks (top ``keep`` of |x| or |h|) per token, each
token's columns requested in ascending index order, as ``step_model="sequential"`` would request
them. Three streams: the up/gate columns of the middle layer (576 ids), its down columns (1536)
and the up/gate columns of all 30 layers in one id space (17,280 ids: layer * 576 + column, the
layers of a token in order). The cache holds ``fraction`` of the ids.

For each stream it prints the OrderedDict LRU's requests/s, then per policy (lru, fifo, lfu,
belady, s3fifo, s3fifo-lcs, arc) dipsim's requests/s (best of three runs, each on a fresh cache)
and misses; with ``--libcachesim`` also libCacheSim's requests/s and misses on the same stream
(its s3fifo is the paper's version; it has no s3fifo-lcs in the build this was written against)
and the ratio. ``BIN`` is ``benchmarks/libcachesim_bench.c`` compiled against a libCacheSim
build (cmake; see that file); it is not part of dipsim.
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

POLICIES = ["lru", "fifo", "lfu", "belady", "s3fifo", "s3fifo-lcs", "arc"]
LCS_NAMES = {"lru": "lru", "fifo": "fifo", "lfu": "lfu", "belady": "belady", "s3fifo": "s3fifo", "arc": "arc"}


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


def dipsim_run(name: str, ids: np.ndarray, n: int, cap: int, repeats: int = 3) -> tuple[float, int]:
    from simulator import caches

    best = 0.0
    for _ in range(repeats):
        c = caches.make(name, n_layers=1, n_columns=n, capacity=cap)
        t0 = time.perf_counter()
        hits = c.run(ids)
        dt = time.perf_counter() - t0
        best = max(best, len(ids) / dt)
    return best, int(len(ids) - np.count_nonzero(hits))


def libcachesim_run(binary: str, path: str, name: str, n: int, cap: int) -> tuple[float, int] | None:
    if name not in LCS_NAMES:
        return None
    out = subprocess.run([binary, path, str(n), str(cap), LCS_NAMES[name], "3"], capture_output=True, text=True,
                         check=True).stdout.split()
    return float(out[3]) * 1e6, int(out[2])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", default=None, help="a trace file (default: the SmolLM2 1024-token capture)")
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--fraction", type=float, default=0.5, help="cache capacity as a share of the ids")
    ap.add_argument("--libcachesim", default=None, help="libcachesim_bench binary (see the docstring)")
    a = ap.parse_args()

    import traces
    from simulator import caches
    from simulator.config import TraceSpec
    from simulator.sweep import trace_for

    trace = traces.load(a.trace) if a.trace else trace_for(TraceSpec(model="smollm2-135m", tokens=1024), progress=True)
    print(f"machine: {os.cpu_count()} cores; numpy {np.__version__}; trace {trace.meta.get('model')} "
          f"{trace.n_tokens} tokens, {trace.n_layers} layers x ({trace.d_model} + {trace.d_ff}) columns")
    for name in POLICIES:   # compile (or load) every kernel before timing
        caches.make(name, n_layers=1, n_columns=8, capacity=4).run(np.arange(8))
    tmp = tempfile.TemporaryDirectory()
    rates: dict[str, list[float]] = {}
    for sname, (ids, n) in streams(trace, a.keep).items():
        cap = int(a.fraction * n)
        t0 = time.perf_counter()
        py_miss = python_lru(ids.tolist(), cap)
        py_rate = len(ids) / (time.perf_counter() - t0)
        print(f"\n{sname}: {len(ids):,} requests over {n:,} ids, capacity {cap:,}")
        print(f"  plain Python OrderedDict LRU  {py_rate / 1e6:7.2f} M req/s   misses {py_miss:,}")
        path = None
        if a.libcachesim:
            path = str(Path(tmp.name) / "ids.bin")
            ids.tofile(path)
        for name in POLICIES:
            rate, miss = dipsim_run(name, ids, n, cap)
            line = (f"  {name:11s} dipsim {rate / 1e6:7.2f} M req/s ({rate / py_rate:5.1f}x OrderedDict)  "
                    f"misses {miss:,}")
            if name == "lru":
                assert miss == py_miss, "dipsim's LRU disagrees with the OrderedDict LRU"
            lcs = libcachesim_run(a.libcachesim, path, name, n, cap) if path else None
            if lcs is not None:
                line += (f"  | libCacheSim {lcs[0] / 1e6:6.2f} M req/s, misses {lcs[1]:,}  "
                         f"(dipsim {rate / lcs[0]:4.1f}x; counts {'equal' if lcs[1] == miss else 'DIFFER'})")
            print(line)
            rates.setdefault(name, []).append(rate)
    low = min(rates["lru"])
    print(f"\nper-request LRU: {low / 1e6:.1f} M req/s at the slowest stream (target >= 5 M: "
          f"{'met' if low >= 5e6 else 'MISSED'})")


if __name__ == "__main__":
    sys.exit(main())
