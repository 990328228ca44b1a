"""The DIP paper's comparison table on SmolLM2 (issue #11): pruning, a learned predictor, DIP + LoRA.

    python benchmarks/methods.py [--out out/methods] [--tokens 1024] [--steps prune,lora,predictor,table]
                                 [--lora-loss kl] [--lora-minutes 14.5] [--force]
                                 [--model smollm2-135m] [--calibration-seqs 64] [--threads 2]

Steps (each reuses its files in ``--out`` unless ``--force``):

* ``prune``: magnitude and SparseGPT (``--calibration-seqs`` x 512 calibration tokens of the learning text) at 50% of every
  MLP matrix -> ``<model>-{magnitude,sparsegpt}-0.5.safetensors`` (time, stored bytes per format);
* ``lora``: a rank-16 adapter on gate/up/down trained with DIP masks at keep 0.5 for ``--lora-minutes``
  (bfloat16 autocast, batch 2 x 512 tokens, lr 2e-3, KL to the dense model or next-token loss);
* ``predictor``: a trace of 8192 learning-text tokens, rank-64 predictors (down and up/gate heads, or
  ``--predictor-heads down``: the neuron head alone, what ``dejavu`` and ``powerinfer`` use) from
  x[l-1], trained on its first 70%, recall on its last 30% and on the evaluation text's own trace;
* ``table``: every row in the closed loop on the first ``--tokens`` tokens of the default corpus (text
  none of the methods learned from), LRU cache holding half the MLP, uniform allocation: perplexity,
  KL to the dense model, top-1 agreement, hit rate, DRAM footprint of the MLP weights (the cache,
  in the row's storage format, + the adapter in fp16) and flash bytes per token.

The load average is printed: the machine is shared, so times vary.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

MODEL = "smollm2-135m"


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def step_prune(lm, out: Path, force: bool, n_seqs: int = 64) -> dict:
    from simulator.methods.prune import prune_model
    from simulator.methods.variants import load_variant

    files = {}
    for method in ("magnitude", "sparsegpt"):
        p = out / f"{MODEL}-{method}-0.5.safetensors"
        if force or not p.exists():
            print(f"prune {method} 0.5 (load {_load()}) ...", flush=True)
            v = prune_model(lm, method, 0.5, n_seqs=n_seqs, seq_len=512, batch=8, progress=True)
            v.save(p)
        v = load_variant(p)
        b = v.meta["bytes"]
        print(f"  {method}: {v.meta['seconds']:.0f} s, sparsity {v.sparsity():.4f}; bytes per weight dense "
              f"{b['dense_per_weight']:.4f}, bitmask {b['bitmask_per_weight']:.4f}, index16 "
              f"{b['index16_per_weight']:.4f}; MLP {b['dense'] / 1e6:.1f} -> {b['bitmask'] / 1e6:.1f} MB (bitmask), "
              f"{b['index16'] / 1e6:.1f} MB (index16)", flush=True)
        files[method] = p
    return files


def step_lora(lm, out: Path, force: bool, loss: str, minutes: float) -> Path:
    from simulator.methods.lora import load_adapter, train_lora

    p = out / f"{MODEL}-lora-{loss}-r16.safetensors"
    if force or not p.exists():
        print(f"lora ({loss}, {minutes} min budget, load {_load()}) ...", flush=True)
        ad = train_lora(lm, rank=16, steps=10_000, batch=2, seq_len=512, lr=2e-3, loss=loss, autocast="bfloat16",
                        max_seconds=minutes * 60, progress=True)
        ad.save(p)
    ad = load_adapter(p)
    m = ad.meta
    curve = m["loss_curve"]
    head = sum(c[1] for c in curve[:5]) / max(len(curve[:5]), 1)
    tail = sum(c[1] for c in curve[-5:]) / max(len(curve[-5:]), 1)
    print(f"  lora {loss}: {m['steps_done']} steps, {m['tokens_seen']} tokens, {m['seconds']:.0f} s; loss first 5 "
          f"steps {head:.4f}, last 5 {tail:.4f}; {m['params']} parameters = {m['fp16_bytes'] / 1e6:.2f} MB fp16",
          flush=True)
    return p


def predictor_name(heads) -> str:
    return f"{MODEL}-learning-8192.predictor-r64{'-upgate' if 'upgate' in heads else ''}.safetensors"


def step_predictor(lm, out: Path, force: bool, tokens: int, heads=("down", "upgate")) -> Path:
    import traces
    from simulator.accuracy import evaluate
    from simulator.methods.predictor import capture_training_trace, evaluate_predictor, load_predictor, train_predictor

    tp = out / f"{MODEL}-learning-8192.safetensors"
    if force or not tp.exists():
        print(f"capture 8192 tokens of the learning text (load {_load()}) ...", flush=True)
        capture_training_trace(lm, tp, tokens=8192)
    p = out / predictor_name(heads)
    if force or not p.exists():
        print(f"train predictors (heads {', '.join(heads)}; load {_load()}) ...", flush=True)
        train_predictor(traces.load(tp), rank=64, keep=0.5, heads=tuple(heads), progress=True).save(p)
    pred = load_predictor(p)
    learn = traces.load(tp)
    n_tr = pred.meta["train_tokens"][1]
    ev = evaluate(lm, {"masking": "dense"}, tokens=tokens, reuse=False, details=True)[0]["details"]["dense_trace"]
    print(f"  predictor: trained {pred.meta['seconds']:.0f} s on tokens {pred.meta['train_tokens']} of the learning "
          f"trace; recall of the true top-50% (chance 0.50), activation mass kept vs the true top-50%:", flush=True)
    report = {}
    for name, (t, a, b) in {"held-out learning tokens": (learn, n_tr, learn.n_tokens),
                            "evaluation text": (ev, 0, ev.n_tokens)}.items():
        for thr in (None, 0.5, 0.3):
            r = report[f"{name}, threshold {thr}"] = evaluate_predictor(pred, t, a, b, 0.5, thr)
            for head in pred.heads:
                h = r[head]
                print(f"    {name:24s} {head:6s} {'top-50%' if thr is None else f'p > {thr}':8s} set "
                      f"{h['mean_set_fraction']:.2f} of the columns: recall {h['mean_recall']:.3f} (layers "
                      f"{min(h['recall']):.2f}..{max(h['recall']):.2f}), precision {h['mean_precision']:.3f}, "
                      f"mass {h['mean_mass']:.3f}", flush=True)
    (out / "predictor-recall.json").write_text(json.dumps(report, indent=1))
    return p


def table_configs(files: dict) -> list[dict]:
    from simulator.methods.variants import bytes_per_weight

    base = {"cache": "lru", "dram_fraction": 0.5}
    rows = [{"masking": "dense", "label": "dense"}]
    rows += [{"masking": "dense", "adapter": str(files[f"lora-{loss}"]), "label": f"dense + lora ({loss})"}
             for loss in ("kl", "nll") if f"lora-{loss}" in files]
    for method in ("magnitude", "sparsegpt"):
        if method in files:
            rows.append({"masking": "dense", "variant": str(files[method]), "label": f"{method} 50%",
                         "weight_format": bytes_per_weight(files[method], "bitmask")})
    rows += [{"masking": "threshold", "keep": 0.5, "label": "threshold 50%"},
             {"masking": "cats", "keep": 0.5, "label": "cats 50%"}]
    if "predictor" in files:
        rows += [{"masking": "predictor", "predictor_file": str(files["predictor"]), "keep": 0.5,
                  "label": "predictor (down), dip (up/gate) 0.5"}]
        if "upgate" in files["predictor"].name:
            rows += [{"masking": "predictor", "predictor_file": str(files["predictor"]), "keep": 0.5,
                      "upgate": "predict", "label": "predictor (down + up/gate) 0.5"}]
        rows += [{"masking": "dejavu", "predictor_file": str(files["predictor"]), "keep": 0.5,
                  "label": "dejavu (neurons, look-ahead) 0.5"}]
    rows += [{"masking": "dip", "keep": 0.5, "label": "dip 0.5"},
             {"masking": "dip-ca", "gamma": 0.2, "keep": 0.5, "label": "dip-ca g0.2 0.5"}]
    for loss in ("kl", "nll"):
        ad = files.get(f"lora-{loss}")
        if ad is not None:
            rows += [{"masking": "dip", "keep": 0.5, "adapter": str(ad), "label": f"dip 0.5 + lora ({loss})"},
                     {"masking": "dip-ca", "gamma": 0.2, "keep": 0.5, "adapter": str(ad),
                      "label": f"dip-ca g0.2 0.5 + lora ({loss})"}]
    return [{**base, **r} for r in rows]


def existing_files(out: Path) -> dict:
    """The method files earlier steps left in ``out`` (so ``--steps table`` alone finds them)."""
    names = {"magnitude": f"{MODEL}-magnitude-0.5.safetensors", "sparsegpt": f"{MODEL}-sparsegpt-0.5.safetensors",
             "lora-kl": f"{MODEL}-lora-kl-r16.safetensors", "lora-nll": f"{MODEL}-lora-nll-r16.safetensors",
             "predictor": predictor_name(("down", "upgate"))}
    found = {k: out / n for k, n in names.items() if (out / n).exists()}
    if "predictor" not in found and (out / predictor_name(("down",))).exists():
        found["predictor"] = out / predictor_name(("down",))
    return found


def step_table(lm, out: Path, files: dict, tokens: int) -> list[dict]:
    from simulator.accuracy import evaluate
    from common.store import read_meta

    cfgs = table_configs(files)
    print(f"table: {len(cfgs)} configurations x {tokens} tokens in the loop (load {_load()}) ...", flush=True)
    t0 = time.perf_counter()
    res = evaluate(lm, cfgs, tokens=tokens, reuse=False, progress=True)
    print(f"  {time.perf_counter() - t0:.0f} s (load {_load()})", flush=True)
    info = lm.info
    n_mlp = 3 * info.n_layers * info.d_model * info.d_ff
    rows = []
    for c, r in zip(cfgs, res):
        bpw = info.bytes_per_weight if c.get("weight_format") is None else float(c["weight_format"])
        adapter = read_meta(c["adapter"], "adapter")["fp16_bytes"] if c.get("adapter") else 0.0
        rows.append({"label": c["label"], "perplexity": r["perplexity"], "kl_to_dense": r["kl_to_dense"],
                     "top1_agreement": r["top1_agreement"], "hit_rate": r["closed_loop_hit_rate"],
                     "dram_mb": (c["dram_fraction"] * n_mlp * bpw + adapter) / 1e6,
                     "adapter_mb": adapter / 1e6, "flash_mb_per_token": r["closed_loop_flash_bytes_per_token"] / 1e6,
                     "bytes_per_weight": bpw, "dense_perplexity": r["dense_perplexity"]})
    print("| configuration | perplexity | KL to dense | top-1 | hit rate | DRAM, MLP (MB) | flash / token (MB) |")
    print("|---|---|---|---|---|---|---|")
    for w in rows:
        extra = f" (incl. adapter {w['adapter_mb']:.2f})" if w["adapter_mb"] else ""
        print(f"| {w['label']} | {w['perplexity']:.2f} | {w['kl_to_dense']:.3f} | {w['top1_agreement']:.3f} | "
              f"{w['hit_rate']:.3f} | {w['dram_mb']:.1f}{extra} | {w['flash_mb_per_token']:.2f} |")
    (out / "table.json").write_text(json.dumps(rows, indent=1))
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/methods")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--steps", default="prune,lora,predictor,table")
    ap.add_argument("--lora-loss", default="kl", choices=["kl", "nll"])
    ap.add_argument("--lora-minutes", type=float, default=14.5)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--model", default=MODEL, help=f"a named model (default {MODEL}); its files are named after it")
    ap.add_argument("--calibration-seqs", type=int, default=64,
                    help="SparseGPT's calibration sequences of 512 tokens (default 64)")
    ap.add_argument("--predictor-heads", default="down,upgate",
                    help="the predictor's heads: down,upgate (default) or down (neurons only: dejavu, powerinfer)")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch intra-op threads (default 2; this setting wins over OMP_NUM_THREADS)")
    a = ap.parse_args(argv)
    if a.threads < 1:
        ap.error("--threads: expected a whole number >= 1")
    return a


def main(argv=None) -> None:
    global MODEL
    a = parse_args(argv)
    MODEL = a.model
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from traces.models import load_model

    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = a.steps.split(",")
    lm = load_model(MODEL, verbose=False)
    if "prune" in steps:
        step_prune(lm, out, a.force, a.calibration_seqs)
    if "lora" in steps:
        step_lora(lm, out, a.force, a.lora_loss, a.lora_minutes)
    if "predictor" in steps:
        step_predictor(lm, out, a.force, a.tokens, a.predictor_heads.split(","))
    if "table" in steps:
        step_table(lm, out, existing_files(out), a.tokens)


if __name__ == "__main__":
    main()
