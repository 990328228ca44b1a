"""Fake trial metrics for the search tests: a deterministic function of the point, so that a study's
bookkeeping (front, resume, refusal) is tested without replay or a model. ``slow_evaluate`` sleeps
and logs every call to ``$DIPSIM_FAKE_LOG`` (the kill-and-resume test counts evaluations)."""
from __future__ import annotations

import hashlib
import json
import os
import time


def fake_metrics(cfg) -> dict:
    rc = cfg.replay
    keep = rc.keep if isinstance(rc.keep, float) else sum(rc.keep) / len(rc.keep)
    frac = rc.dram_fraction if rc.dram_fraction is not None else 0.5
    bonus = {"dip": 0.0, "dip-ca": 0.05, "glu-prune": -0.1, "threshold": 0.02, "dense": -0.2}.get(rc.masking, 0.0)
    tps = 10.0 / (0.1 + keep * (1.0 - frac)) * (1 + bonus)
    ppl = 12.0 * (1 + (1.0 - keep) ** 2 * (1.2 - bonus))
    return {"m.tokens_per_s": tps, "m.perplexity": ppl, "m.dense_perplexity": 12.0, "m.kl_to_dense": ppl / 12 - 1,
            "m.fits_in_dram": True, "m.speedup_vs_dense": tps / 10.0}


def evaluate(cfg, dense):
    return fake_metrics(cfg)


def slow_evaluate(cfg, dense):
    time.sleep(float(os.environ.get("DIPSIM_FAKE_SLEEP", "0.3")))
    row = fake_metrics(cfg)
    log = os.environ.get("DIPSIM_FAKE_LOG")
    if log:
        key = hashlib.sha1(json.dumps(cfg.replay.to_mapping(), sort_keys=True, default=str).encode()).hexdigest()
        with open(log, "a") as f:
            f.write(key + "\n")
    return row
