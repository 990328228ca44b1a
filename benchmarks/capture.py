"""Capture speed and model-load time, first (dequantizing the GGUF) vs cached.

    python benchmarks/capture.py [--model smollm2-135m] [--tokens 1024]

Runs the cold load in a fresh temporary cache directory, then the cached load from it, then a
capture; prints each figure and the cold/cached ratio measured side by side in this run.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--context", type=int, default=512)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dipsim-bench-") as tmp:
        os.environ["DIPSIM_CACHE_DIR"] = tmp
        import torch

        import traces
        from traces.models import load_model

        t0 = time.perf_counter()
        load_model(a.model, verbose=False)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        lm = load_model(a.model, verbose=False)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        traces.capture(lm, Path(tmp) / "t.safetensors", tokens=a.tokens, context=a.context, progress=False)
        cap = time.perf_counter() - t0
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"model {a.model}")
    print(f"  first load (dequantize + cache): {cold:8.1f} s")
    print(f"  cached load:                     {warm:8.2f} s   ({cold / warm:.0f}x faster)")
    print(f"  capture {a.tokens} tokens (context {a.context}): {cap:.2f} s = {a.tokens / cap:.0f} tokens/s")


if __name__ == "__main__":
    sys.exit(main())
