"""``dipsim eval``: closed-loop accuracy of configurations on a real model."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from common.errors import DipsimError
from common.tables import print_table

from ..accuracy import DEFAULT_CONFIG, LOOPS, evaluate

EVAL_HELP = """\
Run the real model with masking and a DRAM cache inside its forward pass (closed loop) and report
perplexity, KL divergence and top-1 agreement to the dense model, the closed-loop hit rate and
flash bytes per token, and beside them the open-loop hit rate (replay of the dense trace of the
same tokens with the same configuration).

Each configuration runs one parallel forward of the text in which every MLP masks all positions
of its layer at once, the policy and caches stepped through the tokens in order (--loop layer, the
default; --loop token runs the token-by-token reference). The configurations are the product of the repeatable options --masking, --gamma,
--keep, --cache and --dram-fraction (--gamma applies to dip-ca only), plus every --config entry.
--config takes a JSON or YAML mapping or list of mappings, inline or as a file, e.g.
  --config '{"masking": "dip", "keep": 0.75}'  --config sweep.yaml
with the keys masking, gamma, fixed_top_n, seed, keep, keep_up, keep_gate, keep_down, cache,
cache_params, allocation, allocation_params, dram_fraction, dram_bytes, weight_format, label.
Without --config and without any of those options, one configuration runs: dip-ca, gamma 0.2,
keep 0.5, lru, dram fraction 0.5. Results are cached on disk (--no-reuse to recompute).

Tokens: BOS + the first --tokens text tokens, one context window; every text token after the
--prefill ones is scored (perplexity = exp(mean NLL)), its first prediction coming from the dense
prompt. Example:
  dipsim eval --tokens 1024 --masking dip-ca --gamma 1 --gamma 0.5 --gamma 0.2 --keep 0.5
"""


def add_eval_parser(subparsers, add_corpus_args, positive_int) -> argparse.ArgumentParser:
    """Add the ``eval`` subcommand to a ``dipsim`` subparsers object; returns its parser."""
    s = subparsers.add_parser("eval", description=EVAL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                              help="closed-loop accuracy: perplexity, KL to dense, closed- vs open-loop hit rate")
    s.add_argument("--model", default="smollm2-135m",
                   help="smollm2-135m (default), gemma3-270m, qwen2.5-0.5b, qwen2.5-coder-1.5b (optional: python3 tasks.py model NAME), a local Hugging Face model directory, or a .gguf file")
    s.add_argument("--tokens", type=positive_int, default=1024, help="text tokens to run (default 1024)")
    s.add_argument("--prefill", type=int, default=0,
                   help="leading text tokens run densely as a prompt and left out of every metric (default 0)")
    s.add_argument("--warmup", type=int, default=16,
                   help="decode tokens left out of the hit rates, as in replay (default 16)")
    s.add_argument("--calib-tokens", type=positive_int, default=64,
                   help="dense-trace prefix used by calibrated policies (threshold, static, pinned; default 64)")
    g = s.add_argument_group("configurations (each option repeatable; the product of the values runs)")
    g.add_argument("--masking", action="append", metavar="NAME",
                   help="masking policy: dense, dip, dip-ca, glu-prune, threshold, static, random (default dip-ca)")
    g.add_argument("--gamma", action="append", type=float, metavar="G", help="dip-ca's gamma in [0, 1] (default 0.2)")
    g.add_argument("--keep", action="append", type=float, metavar="F", help="fraction of columns kept (default 0.5)")
    g.add_argument("--keep-down", type=float, metavar="F", help="keep of W_down only (default: --keep)")
    g.add_argument("--keep-gate", type=float, metavar="F",
                   help="separate keep for W_gate (default: shares W_up's mask)")
    g.add_argument("--fixed-top-n", type=int, metavar="N", help="dip-ca: the N largest inputs are never penalised")
    g.add_argument("--seed", type=int, metavar="S", help="random masking's seed")
    g.add_argument("--cache", action="append", metavar="NAME", help="DRAM cache policy (default lru; not belady)")
    g.add_argument("--dram-fraction", action="append", type=float, metavar="F",
                   help="DRAM cache budget as a share of the MLP weights (default 0.5)")
    g.add_argument("--allocation", default=None, help="budget split over layers: uniform (default) or benefit")
    g.add_argument("--weight-format", default=None, help="bytes per weight: source (default), int4, int8, fp16, ...")
    g.add_argument("--config", action="append", metavar="JSON|YAML|FILE",
                   help="configuration(s) as a JSON/YAML mapping or list, inline or in a file (repeatable)")
    s.add_argument("--format", choices=["table", "json"], default="table", help="output format (default table)")
    s.add_argument("--no-reuse", action="store_true", help="recompute, and neither read nor write the result cache")
    s.add_argument("--loop", choices=LOOPS, default="layer",
                   help="layer: one parallel forward per configuration, policies and caches stepped through the "
                        "tokens layer by layer (default; exact, at prefill speed); token: the token-by-token "
                        "reference with the KV cache (about a second of CPU per token for SmolLM2)")
    s.add_argument("--batched-gemm", action="store_true",
                   help="--loop token only: decode with batched GEMMs: ~1.5x faster, but each configuration's "
                        "figures then depend in the last bits on the batch it ran in (default: row by row)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_corpus_args(s)
    return s


def _parse_config_arg(text: str) -> list[dict[str, Any]]:
    import yaml

    p = Path(text)
    where = "--config"
    if p.suffix.lower() in (".json", ".yaml", ".yml") or (len(text) < 4096 and "\n" not in text and p.is_file()):
        if not p.is_file():
            raise DipsimError(f"--config file not found: {p}")
        text, where = p.read_text(encoding="utf-8"), str(p)
    try:
        data = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as e:
        raise DipsimError(f"{where}: not JSON or YAML ({str(e).splitlines()[0]})") from None
    if isinstance(data, dict) and isinstance(data.get("configs"), list):
        data = data["configs"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise DipsimError(f"{where}: expected a mapping or a list of mappings (configurations)")
    return data


def configs_from_args(a: argparse.Namespace) -> list[dict[str, Any]]:
    """The configurations an ``eval`` command line asks for (see the subcommand's help)."""
    import itertools

    extra = []
    for text in a.config or []:
        extra += _parse_config_arg(text)
    axes_given = any(getattr(a, k) for k in ("masking", "gamma", "keep", "cache", "dram_fraction")) or any(
        getattr(a, k) is not None for k in ("keep_down", "keep_gate", "fixed_top_n", "seed", "allocation",
                                            "weight_format"))
    out: list[dict[str, Any]] = []
    if axes_given or not extra:
        seen = set()
        for m, gamma, keep, cache, frac in itertools.product(
                a.masking or [DEFAULT_CONFIG["masking"]], a.gamma or [DEFAULT_CONFIG["gamma"]],
                a.keep or [DEFAULT_CONFIG["keep"]], a.cache or [DEFAULT_CONFIG["cache"]],
                a.dram_fraction or [DEFAULT_CONFIG["dram_fraction"]]):
            c: dict[str, Any] = {"masking": m, "keep": keep, "cache": cache, "dram_fraction": frac}
            if m == "dip-ca":
                c["gamma"] = gamma
                if a.fixed_top_n is not None:
                    c["fixed_top_n"] = a.fixed_top_n
            if m == "random" and a.seed is not None:
                c["seed"] = a.seed
            for k in ("keep_down", "keep_gate", "allocation", "weight_format"):
                if getattr(a, k) is not None:
                    c[k] = getattr(a, k)
            key = json.dumps(c, sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append(c)
    return out + extra


def table_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"config": r["label"], "perplexity": r["perplexity"], "kl_to_dense": r["kl_to_dense"],
             "top1": r["top1_agreement"], "hit_rate": r["hit_rate"], "open_hit_rate": r["open_loop_hit_rate"],
             "flash_MB/tok": r["flash_bytes_per_token"] / 1e6,
             "open_flash_MB/tok": r["open_loop_flash_bytes_per_token"] / 1e6} for r in results]


def run_eval(a: argparse.Namespace) -> int:
    """The ``eval`` subcommand: evaluate the configurations and print a table or JSON."""
    configs = configs_from_args(a)
    results = evaluate(a.model, configs, text=a.text, dataset=a.dataset, text_column=a.text_column,
                       tokens=a.tokens, prefill=a.prefill, warmup=a.warmup, calib_tokens=a.calib_tokens,
                       loop=a.loop, reuse=not a.no_reuse, progress=not a.quiet,
                       batch_invariant=not a.batched_gemm)
    if a.format == "json":
        rows = [{k: v for k, v in r.items() if k != "details"} for r in results]
        print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2))
        return 0
    r0 = results[0]
    print(f"{r0['model']}: {r0['tokens']} scored tokens of {r0['corpus']} (prefill {r0['prefill']}), dense "
          f"perplexity {r0['dense_perplexity']:.4f}; hit rates by bytes over {r0['cache_tokens']} tokens after a "
          f"warm-up of {r0['warmup']}")
    print_table(table_rows(results))
    return 0
