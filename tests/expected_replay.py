"""Fixed expected replay figures on the small committed trace ``tests/data/smol-6x48.safetensors``.

    python tests/expected_replay.py           # print current figures and any differences
    python tests/expected_replay.py --update  # after an intended change: rewrite expected_replay.json

``tests/test_replay.py`` compares against the JSON, so an unintended change to a policy shows up as
a failing test with the configuration that moved.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
TRACE = HERE / "data" / "smol-6x48.safetensors"
EXPECTED = HERE / "data" / "expected_replay.json"

CONFIGS = [
    dict(masking="dense", cache="lru", dram_fraction=0.5),
    dict(masking="dip", cache="lru", keep=0.5, dram_fraction=0.75),
    dict(masking="dip", cache="belady", keep=0.5, dram_fraction=0.75),
    dict(masking="dip", cache="lfu", keep=0.5, dram_fraction=0.75),
    dict(masking="dip", cache="fifo", keep=0.5, dram_fraction=0.75),
    dict(masking="dip", cache="s3fifo", keep=0.5, dram_fraction=0.75),
    dict(masking="dip", cache="pinned", keep=0.5, dram_fraction=0.75),
    dict(masking="dip", cache="lru", keep=0.5, keep_down=0.25, dram_fraction=0.4, allocation="benefit"),
    dict(masking="dip", cache="lru", keep=0.5, keep_gate=0.3, dram_fraction=0.6),
    dict(masking="dip-ca", cache="lru", keep=0.5, dram_fraction=0.75, gamma=0.2),
    dict(masking="dip-ca", cache="lru", keep=0.5, dram_fraction=0.75, gamma=0.0),
    dict(masking="dip-ca", cache="lru", keep=0.5, dram_fraction=0.75, gamma=0.5, fixed_top_n=16),
    dict(masking="glu-prune", cache="lru", keep=0.5, dram_fraction=0.5),
    dict(masking="threshold", cache="lru", keep=0.5, dram_fraction=0.75),
    dict(masking="static", cache="lru", keep=0.5, dram_fraction=0.25),
    dict(masking="random", cache="lru", keep=0.5, dram_fraction=0.75, seed=3),
    # neuron-level policies (this trace predates gate activations: cats on |h|)
    dict(masking="cats", cache="lru", keep=0.5, dram_fraction=0.5, score="glu"),
    dict(masking="cats-ca", cache="lru", keep=0.5, dram_fraction=0.5, score="glu", gamma=0.3),
    dict(masking="cats-ca", cache="lru", keep=0.5, dram_fraction=0.5, score="glu", gamma=0.3, selection="topk"),
    dict(masking="dejavu", cache="lru", keep=0.5, dram_fraction=0.5, oracle=True),
    dict(masking="powerinfer", cache="pinned", keep=0.5, dram_fraction=0.5, oracle=True),
    dict(masking="dejavu", cache="window", keep=0.5, dram_fraction=0.75, oracle=True, cache_params={"tokens": 3}),
]


def key(cfg: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in cfg.items())


def compute() -> dict[str, dict[str, float]]:
    import traces
    import simulator

    t = traces.load(TRACE)
    out = {}
    for cfg in CONFIGS:
        tot = simulator.replay(t, warmup=8, calib_tokens=16, **cfg).totals()
        out[key(cfg)] = {
            "hit_rate": round(tot["hit_rate"], 6),
            "flash_bytes_per_token": round(tot["flash_bytes_per_token"], 3),
            "dram_bytes_per_token": round(tot["dram_bytes_per_token"], 3),
            **{f"{g}.selected_columns_per_token": round(v["selected_columns_per_token"], 4) for g, v in tot["groups"].items()},
        }
    return out


def main() -> None:
    new = compute()
    old = json.loads(EXPECTED.read_text()) if EXPECTED.exists() else {}
    for k, v in new.items():
        mark = "" if old.get(k) == v else "   <-- changed" if k in old else "   <-- new"
        print(f"{k}\n    {v}{mark}")
    if "--update" in sys.argv:
        EXPECTED.write_text(json.dumps(new, indent=1, sort_keys=True) + "\n")
        print(f"wrote {EXPECTED}")


if __name__ == "__main__":
    main()
