"""Capture MLP activations of a real model into a trace file.

For every decoder layer and every token the forward pass records

* ``x`` -- the MLP input (after the pre-MLP norm): a forward pre-hook on the MLP module;
* ``h = act(W_gate x) * (W_up x)`` -- the input of W_down: a forward pre-hook on ``down_proj``,
  which holds for separate gate/up projections and for Phi-3's fused ``gate_up_proj`` alike;
* ``g = act(W_gate x)`` -- the gate activation alone (what CATS thresholds): the gate projection's
  output through the MLP's own activation module (``register_gate_hook``); ``with_g=False``
  (``dipsim trace --no-g``) leaves it out.

The corpus is tokenized without special tokens and cut into windows of ``context`` positions. Each
window's position 0 is its attention sink, run densely and not recorded (``traces.prefix``): the
prefix token (``prefix_token``, default the model's own convention), or without one the text token
just before the window's first recorded token. So a trace of N tokens holds N text tokens: the first
N with a prefix, and the text tokens 1..N without one (text token 0 is then the first window's
sink) -- the positions the closed loops mask, whatever the convention. Windows are processed one at
a time and written to disk as they finish, so memory stays bounded however long the capture. Ctrl-C
keeps what was captured: the trace is saved with the tokens finished so far.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .corpus import Corpus, load_corpus
from common.errors import DipsimError
from common.progress import progress_bar
from .writer import TraceWriter
from .models import LoadedModel, load_model
from . import prefix as prefix_mod

FP16_MAX = 65504.0


class CaptureInterrupted(KeyboardInterrupt):
    """Raised after an interrupted capture has saved the tokens finished so far."""

    def __init__(self, path: Path | None, n_done: int):
        super().__init__(f"interrupted: saved the {n_done} tokens finished so far to {path} (a complete, shorter "
                         f"trace; run again for all)" if path else "interrupted: nothing saved")
        self.path, self.n_done = path, n_done


def register_gate_hook(mlp, fn):
    """Call ``fn(a)`` with the gate activation ``a = act(W_gate x)`` ([batch, positions, d_ff]) every
    time ``mlp`` runs: a forward hook on its gate projection (``gate_proj``, or the first half of
    Phi-3's fused ``gate_up_proj``) applying the MLP's own activation module. Returns the handle."""
    if hasattr(mlp, "gate_proj"):
        act, proj, half = getattr(mlp, "act_fn", None), mlp.gate_proj, False
    else:
        act, proj, half = getattr(mlp, "activation_fn", None), mlp.gate_up_proj, True
    if act is None:
        raise DipsimError(f"{type(mlp).__name__}: no activation module (act_fn / activation_fn) to recompute "
                          f"act(W_gate x) with")

    def hook(mod, args, out):
        fn(act(out.chunk(2, dim=-1)[0] if half else out))
    return proj.register_forward_hook(hook)


def tokenize_prefix(tokenizer, corpus: Corpus, n_tokens: int, reserve: int = 0, least: int = 1) -> list[int]:
    """The first ``n_tokens`` token ids of the corpus, tokenizing only as much text as needed
    (``reserve``: how many of them are not counted in ``--tokens``, and ``least`` the fewest tokens
    ``--tokens`` takes, for the error message)."""
    text = corpus.text
    chars = max(4096, n_tokens * 8)
    while True:
        piece = text[:chars]
        ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
        if chars >= len(text):
            break
        if len(ids) > n_tokens + 16:  # the cut tail (maybe half a word) is not used
            break
        chars *= 2
    if len(ids) < n_tokens and len(ids) - reserve < least:
        raise DipsimError(f"corpus {corpus.name} has only {len(ids)} tokens: too short for the {least} --tokens "
                          f"takes at least" + (" (a trace without a prefix token runs its first text token densely, "
                                               "unrecorded)" if reserve else ""))
    if len(ids) < n_tokens:
        raise DipsimError(f"corpus {corpus.name} has only {len(ids)} tokens; ask for at most "
                          f"{len(ids) - reserve} with --tokens")
    return list(ids[:n_tokens])


def capture(model: str | os.PathLike | LoadedModel = "smollm2-135m", out: str | os.PathLike = "trace.safetensors",
            *, tokens: int = 512, text: str | os.PathLike | None = None, dataset: str | os.PathLike | None = None,
            text_column: str = "text", context: int = 512, dtype: str = "float16", with_h: bool = True,
            with_g: bool = True, prefix_token: str | int = prefix_mod.DEFAULT, progress: bool = True) -> Path:
    """Run ``model`` over the corpus and write the trace of ``tokens`` text tokens to ``out``;
    ``prefix_token``: what runs before the text (``traces.prefix``; resolved before the model loads)."""
    if tokens <= 0:
        raise DipsimError(f"--tokens must be a positive integer, got {tokens}")
    if context < 2:
        raise DipsimError(f"--context must be at least 2, got {context}")
    if dtype not in ("float16", "float32"):
        raise DipsimError(f"--dtype {dtype!r} not supported; allowed: float16, float32")
    corpus = load_corpus(text, dataset, text_column)
    prefix = prefix_mod.resolve(prefix_token, model)
    lm = model if isinstance(model, LoadedModel) else load_model(model)
    import torch

    first = 0 if prefix is not None else 1     # text token 0 is the first window's sink without a prefix
    ids = tokenize_prefix(lm.tokenizer, corpus, tokens + first, reserve=first)
    step = context - 1                          # one sink position per window
    info = lm.info
    meta: dict[str, Any] = dict(info.as_meta())
    meta.update(corpus=corpus.name, corpus_digest=corpus.digest, context=context, prefix_token=prefix,
                first_text_token=first)

    L = info.n_layers
    xbuf: list[Any] = [None] * L
    hbuf: list[Any] = [None] * L
    gbuf: list[Any] = [None] * L
    handles = []

    def first_arg(args, kwargs):
        return args[0] if args else next(iter(kwargs.values()))

    for i, mlp in enumerate(lm.mlps):
        handles.append(mlp.register_forward_pre_hook(
            lambda mod, args, kwargs, i=i: xbuf.__setitem__(i, first_arg(args, kwargs).detach()), with_kwargs=True))
        if with_h:
            handles.append(mlp.down_proj.register_forward_pre_hook(
                lambda mod, args, kwargs, i=i: hbuf.__setitem__(i, first_arg(args, kwargs).detach()), with_kwargs=True))
        if with_g:
            handles.append(register_gate_hook(mlp, lambda a, i=i: gbuf.__setitem__(i, a.detach())))
    base = getattr(lm.model, getattr(lm.model, "base_model_prefix", ""), None) or lm.model  # no LM head: no logits

    bar = progress_bar(tokens, progress, f"capturing {info.model}", leave=True)
    n_done = 0
    writer = TraceWriter(out, meta, n_layers=L, d_model=info.d_model, d_ff=info.d_ff, n_tokens=tokens,
                         dtype=dtype, with_h=with_h, with_g=with_g)
    try:
        with torch.inference_mode():
            for t0 in range(0, tokens, step):
                chunk = ids[first + t0:first + t0 + step]
                sink = prefix if prefix is not None else ids[t0]   # ids[first + t0 - 1]
                base(input_ids=torch.tensor([[sink] + chunk]), use_cache=False)
                xs = [xbuf[i][0, 1:].float().numpy() for i in range(L)]
                hs = [hbuf[i][0, 1:].float().numpy() for i in range(L)] if with_h else None
                gs = [gbuf[i][0, 1:].float().numpy() for i in range(L)] if with_g else None
                if dtype == "float16":
                    _check_fp16_range(xs, hs, t0, gs)
                writer.write(t0, xs, hs, gs)
                n_done = t0 + len(chunk)
                bar.update(len(chunk))
        bar.close()
        return writer.commit()
    except KeyboardInterrupt:
        bar.close()
        path = writer.commit(n_done) if n_done > 0 else None
        if path is None:
            writer.abort()
        raise CaptureInterrupted(path, n_done) from None
    except BaseException:
        bar.close()
        writer.abort()
        raise
    finally:
        for h in handles:
            h.remove()


def _check_fp16_range(xs: list[np.ndarray], hs: list[np.ndarray] | None, t0: int,
                      gs: list[np.ndarray] | None = None) -> None:
    for name, arrs in (("x", xs), ("h", hs or []), ("g", gs or [])):
        for layer, a in enumerate(arrs):
            m = float(np.abs(a).max()) if a.size else 0.0
            if not np.isfinite(m) or m > FP16_MAX:
                raise DipsimError(f"activation {name} of layer {layer} reaches {m:.4g} near token {t0}, beyond "
                                  f"float16's range; capture with --dtype float32")


