"""dipsim optimize on the real SmolLM2: a small search through the command line, then its best.yaml run
as is by sweep, replay --config and eval --config, each reproducing the trial's metrics exactly (eval
through the accuracy store's key; measured again, within float32 noise)."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "simulator.cli", *args], capture_output=True, text=True, cwd=cwd,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def test_best_yaml_reproduces_its_trial_through_sweep_replay_and_eval(tmp_path):
    exp = tmp_path / "s.yaml"
    exp.write_text(yaml.safe_dump({
        "name": "s", "trace": {"model": "smollm2-135m", "tokens": 128},
        "base": {"cache": "lru", "device": "paper-a18", "accuracy": True, "warmup": 8, "calib_tokens": 32},
        "search": {"space": {"masking": ["dip", "dip-ca", "threshold"], "keep": {"low": 0.3, "high": 1.0},
                             "gamma": {"low": 0.0, "high": 1.0}, "dram_fraction": {"low": 0.2, "high": 0.8}},
                   "constraints": {"max_perplexity_increase": 0.5}, "trials": 4}}))
    out = tmp_path / "out"
    r = cli("optimize", str(exp), "--out", str(out), "-q")
    assert "Pareto front of the feasible trials" in r.stdout or "no feasible trial" in r.stdout
    df = pd.read_parquet(out / "trials.parquet")
    assert len(df) == 4 and {"m.tokens_per_s", "m.speedup_vs_dense", "m.perplexity", "m.prefix_token",
                             "feasible", "pareto", "c.max_perplexity_increase"} <= set(df.columns)
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    best = yaml.safe_load((out / "best.yaml").read_text())
    trial = int(best["description"].split()[1])
    row = df[df["trial"] == trial].iloc[0]
    feas = df[df["feasible"]]
    assert row["m.tokens_per_s"] == feas["m.tokens_per_s"].max()

    sw = cli("sweep", str(out / "best.yaml"), "--out", str(tmp_path / "sw"), "-q")
    assert "results" in sw.stdout
    srow = pd.read_parquet(tmp_path / "sw" / "results.parquet").iloc[0]
    for m in ("m.tokens_per_s", "m.speedup_vs_dense", "m.perplexity", "m.kl_to_dense", "m.hit_rate"):
        assert srow[m] == row[m], m
    rep = json.loads(cli("replay", "--config", str(out / "best.yaml"), "--format", "json", "-q").stdout)
    for m in ("tokens_per_s", "speedup_vs_dense", "hit_rate", "flash_bytes_per_token"):
        assert rep[m] == row[f"m.{m}"], m
    ev = json.loads(cli("eval", "--config", str(out / "best.yaml"), "--format", "json", "-q").stdout)
    assert ev["from_cache"]         # the very configuration and run the trial measured: the store's key
    for m in ("perplexity", "kl_to_dense", "top1_agreement", "closed_loop_hit_rate"):
        assert ev[m] == row[f"m.{m}"], m
    # measured again: float32 sums may round differently from run to run (threads under load), and the
    # closed loop of a cache-aware policy then follows another, equally valid trajectory (a near-tied
    # top-k choice): 17.30 against 17.12 was seen at load 9; twice in a row at rest they were equal
    ev = json.loads(cli("eval", "--config", str(out / "best.yaml"), "--format", "json", "-q", "--no-reuse").stdout)
    assert not ev["from_cache"]
    assert abs(ev["perplexity"] / row["m.perplexity"] - 1) < 0.03
