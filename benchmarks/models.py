"""Join, first load, cached load, memory and dense perplexity of a named model.

    python benchmarks/models.py --model qwen2.5-coder-1.5b [--tokens 512] [--dtypes float32,bfloat16]
                                [--prefix-token auto|bos|eos|none|ID]

Works in a fresh temporary cache directory, so every step is cold where it should be. Each step
runs in its own child process, so its peak RSS (``ru_maxrss``: resident pages, including the
read-only mapped model files) is that step's alone:

1. join the model's pieces (optional named models only);
2. first load: dequantize the GGUF and save the float32 copy to the cache;
3. per dtype: load from the cache, then one parallel forward over the first ``--tokens`` tokens
   of the default corpus with labels (loss-based perplexity; the prefix token as ``dipsim eval``
   and a capture run it: by default the model's own convention, ``traces.prefix``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # this checkout's code, whichever checkout the environment was installed from


class _AnonPeak:
    """Peak RssAnon, sampled from /proc/self/status by a daemon thread."""

    def __init__(self) -> None:
        import threading

        self.peak = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        self.peak = max(self.peak, int(line.split()[1]))
            time.sleep(0.02)


ANON = _AnonPeak() if os.path.exists("/proc/self/status") and "--step" in sys.argv else None


def _peak_gb() -> dict:
    return {"peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,  # kB on Linux
            "anon_gb": ANON.peak / 1e6 if ANON else float("nan")}


def step(name: str, model: str, tokens: int, dtype: str, prefix_token: str = "auto") -> dict:
    from traces.models import load_model, resolve

    t0 = time.perf_counter()
    if name == "join":
        resolve(model)
        return {"join_s": time.perf_counter() - t0, **_peak_gb()}
    if name == "first":
        load_model(model, verbose=False)
        return {"first_load_s": time.perf_counter() - t0, **_peak_gb()}
    import math

    import torch

    from traces import prefix
    from traces.capture import tokenize_prefix
    from traces.corpus import load_corpus

    lm = load_model(model, verbose=False, dtype=dtype)
    load_s = time.perf_counter() - t0
    ids = tokenize_prefix(lm.tokenizer, load_corpus(), tokens)
    first = prefix.resolve(prefix_token, lm, "--prefix-token")
    inp = torch.tensor([prefix.sequence(first, ids)])
    times, loss = [], None
    with torch.inference_mode():
        for _ in range(2):  # the second forward shows the steady-state time
            t1 = time.perf_counter()
            loss = float(lm.model(input_ids=inp, labels=inp).loss)
            times.append(time.perf_counter() - t1)
    return {"dtype": dtype, "cached_load_s": load_s, "forward_s": times, "perplexity": math.exp(loss),
            "prefix_token": prefix.label(first),
            **_peak_gb(), "params": sum(p.numel() for p in lm.model.parameters())}


def main() -> None:
    from traces import prefix

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--prefix-token", default=prefix.DEFAULT, metavar="auto|bos|eos|none|ID", help=prefix.HELP)
    ap.add_argument("--step", help=argparse.SUPPRESS)  # internal: run one step in this process
    ap.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.step:
        print(json.dumps(step(a.step, a.model, a.tokens, a.dtype, a.prefix_token)))
        return
    import torch

    from traces.parts import optional_models

    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"model {a.model}, {a.tokens} tokens", flush=True)
    steps = (["join"] if a.model in optional_models() else []) + ["first"] + \
            [f"forward:{d}" for d in a.dtypes.split(",")]
    with tempfile.TemporaryDirectory(prefix="dipsim-bench-") as tmp:
        env = dict(os.environ, DIPSIM_CACHE_DIR=tmp, PYTHONPATH=ROOT)
        for s in steps:
            name, _, dtype = s.partition(":")
            r = subprocess.run([sys.executable, __file__, "--model", a.model, "--tokens", str(a.tokens),
                                "--step", name, "--dtype", dtype or "float32", "--prefix-token", a.prefix_token],
                               env=env, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"step {s} failed:\n{r.stderr[-2000:]}")
            m = json.loads(r.stdout.strip().splitlines()[-1])
            mem = f"peak RSS {m['peak_gb']:5.2f} GB, anonymous {m['anon_gb']:5.2f} GB"
            if name == "join":
                print(f"  join pieces:                {m['join_s']:7.1f} s   {mem}")
            elif name == "first":
                print(f"  first load (dequant+cache): {m['first_load_s']:7.1f} s   {mem}")
            else:
                f1, f2 = m["forward_s"]
                print(f"  {dtype:9s} cached load {m['cached_load_s']:5.1f} s, forward {f1:5.1f} s then {f2:5.1f} s, "
                      f"perplexity {m['perplexity']:.4f} (prefix token {m['prefix_token']})  {mem} "
                      f"({m['params'] / 1e9:.2f} B parameters)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
