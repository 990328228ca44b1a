"""Does the number format change DIP's masks? bfloat16 against float32, layer by layer.

    python benchmarks/mask_rounding.py [--model qwen2.5-coder-1.5b] [--tokens 160] [--keep 0.5]

Loads the model twice, in float32 and in bfloat16, runs the first ``--tokens`` tokens of the default
corpus through both and prints, per layer, the share of float32's kept columns that bfloat16 keeps
too: the top-``keep`` |x| of the MLP input (up/gate) and the top-``keep`` |GLU(x)| (down), the first
position dense, as DIP chooses them. Twice: (a) in dense forwards, the masks only read off, so the
share measures rounding alone; (b) in masked forwards, where each layer's mask is applied, so a
column swapped at the top-k boundary in one layer changes every later layer's input.

Why: on Qwen2.5-Coder-1.5B's MMLU, bfloat16 and float32 gave the dense model the same answer on 221
of 228 questions but DIP keep 0.5 on only 171 (docs/results/methods.md). This script measures the
mechanism: the masks themselves diverge through the depth of a masked forward. The DIP here is a
few lines of its own (a forward replaced on each MLP), independent of dipsim's masker, and runs
without a cache: the cache does not change DIP's choice.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _masks(lm, ids, keep: float, masked: bool) -> list[tuple]:
    import torch

    layers = lm.model.model.layers
    out, saved = [], []
    for layer in layers:
        mlp = layer.mlp

        def forward(x, mlp=mlp):
            mx = _top(x, keep)
            xm = x * mx if masked else x
            h = mlp.act_fn(mlp.gate_proj(xm)) * mlp.up_proj(xm)
            mh = _top(h, keep)
            out.append((mx[0, 1:].numpy(), mh[0, 1:].numpy()))
            return mlp.down_proj(h * mh if masked else h)
        saved.append(mlp.forward)
        mlp.forward = forward
    try:
        with torch.no_grad():
            lm.model(ids)
    finally:
        for layer, f in zip(layers, saved):
            layer.mlp.forward = f
    return out


def _top(t, keep: float):
    import torch

    k = int(round(keep * t.shape[-1]))
    m = torch.zeros_like(t, dtype=torch.bool).scatter_(-1, t.abs().topk(k, dim=-1).indices, True)
    m[:, 0] = True                       # the first position runs densely, as in dipsim
    return m


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-1.5b", help="a named model or a local model directory")
    ap.add_argument("--tokens", type=int, default=160, help="tokens of the default corpus (default 160)")
    ap.add_argument("--keep", type=float, default=0.5, help="DIP's kept share of each group (default 0.5)")
    a = ap.parse_args(argv)
    from common.cpu import describe
    from traces.corpus import default_corpus
    from traces.models import load_model

    print(describe())
    f32 = load_model(a.model, dtype="float32", verbose=False)
    b16 = load_model(a.model, dtype="bfloat16", verbose=False)
    if not hasattr(getattr(f32.model, "model", None), "layers"):
        print(f"{a.model}: no model.model.layers here; this script knows Llama-, Qwen- and Gemma-style models")
        return 2
    ids = f32.tokenizer(default_corpus().text, return_tensors="pt").input_ids[:, :a.tokens]
    print(f"{a.model}: {ids.shape[1]} tokens of the default corpus, keep {a.keep}; share of float32's kept "
          f"columns that bfloat16 keeps too, layer 0 first")
    for masked in (False, True):
        pairs = zip(_masks(f32, ids, a.keep, masked), _masks(b16, ids, a.keep, masked))
        shares = [[((p & q).sum(-1) / p.sum(-1)).mean() for p, q in zip(m32, m16)] for m32, m16 in pairs]
        print("masked forwards (masks applied):" if masked else "dense forwards (masks read off):")
        for i, group in enumerate(("up/gate", "down")):
            vals = [s[i] for s in shares]
            print(f"  {group:8s} min {min(vals):.3f}  " + " ".join(f"{v:.3f}" for v in vals))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
