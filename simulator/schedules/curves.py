"""Per-layer error curves of DIP masking, the costs the greedy rule allocates by, measured once per
model, calibration text and grid and kept in the cache directory.

The calibration text (``text``): ``tail``, the default corpus from its middle on (the first paragraph
break after half its characters) -- the closed loop and captured traces read the corpus from its
start, so the two never overlap for any run that reads less than the first half (232,603 characters,
tens of thousands of tokens) -- or a UTF-8 file. Its first
``tokens`` tokens run once through the dense model (prefix token by the model's own convention), and
each gated MLP's input x, its GLU output h, its output y, the gradient of the text's summed NLL with
respect to y (one backward pass) and the residual stream after its decoder layer are recorded. Then
for every layer and grid keep k (``greedy.levels``), the change d of the layer's MLP output under

* ``upgate``: the MLP run on x masked to the top ``round(k * d_model)`` of |x| per token (DIP's
  up/gate rule), with down dense;
* ``down``: ``down_proj`` on h masked to the top ``round(k * d_ff)`` of |h| per token (DIP's down rule),
  from the dense h;

gives three error measures (``ERRORS``), each summed over tokens:

* ``fisher``: (g . d)^2 with g the gradient above: the squared first-order change of each token's
  log-likelihood, i.e. d under the empirical Fisher information, which weighs a layer by how much the
  model's output depends on it (the default);
* ``output``: |d|^2 over |y|^2, the MLP's own relative error;
* ``residual``: |d|^2 over the squared norm of the residual stream after the layer, how far the hidden
  state moves relative to its size (no gradient; on Qwen2.5-0.5B it under-weighs the late layers:
  docs/how-to/search.md).

Each curve is measured with the other group dense (a layer's error per group, costs assumed additive).
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import DipsimError
from common.io import atomic_write, cache_root
from common.progress import progress_bar

from . import greedy

GROUPS = ("upgate", "down")
#: how a layer's masking error is measured (module doc)
ERRORS = ("fisher", "output", "residual")
VERSION = 2      # of the measurement: part of the cache key
_MEMO: dict[str, dict[str, np.ndarray]] = {}


def calibration_corpus(text: str):
    """The calibration text: ``tail`` (the default corpus from its middle on) or a UTF-8 file."""
    from traces.corpus import Corpus, default_corpus, load_corpus

    if text != "tail":
        return load_corpus(text=text)
    full = default_corpus()
    half = len(full.text) // 2
    cut = full.text.find("\n\n", half)
    return Corpus(f"{full.name}:tail", full.text[(cut + 2 if cut >= 0 else half):])


@functools.lru_cache(maxsize=16)
def text_digest(text: str, where: str = "text") -> str:
    """The first 12 hex digits of the calibration text's SHA-256 (recorded with the schedule)."""
    try:
        return calibration_corpus(text).digest.removeprefix("sha256:")[:12]
    except DipsimError as e:
        raise DipsimError(f"{where}: {e}") from None


def curves(model: str, text: str, tokens: int, step: float, progress: bool = True) -> dict[str, np.ndarray]:
    """``{"group:error": err [L, K]}`` (``GROUPS`` x ``ERRORS``) for ``model`` (a name or path ``traces.models`` resolves), from the
    cache when measured before."""
    from traces.identity import model_key
    from traces.models import resolve

    key = json.dumps({"model": model_key(resolve(model)), "text": text_digest(text), "tokens": int(tokens),
                      "step": float(step), "version": VERSION}, sort_keys=True)
    if key in _MEMO:
        return _MEMO[key]
    path = cache_root() / "schedules" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"
    if path.exists():
        with np.load(path) as z:
            out = {n: z[n] for n in z.files if n != "key"}
    else:
        out = measure(model, text, tokens, step, progress)
        import io
        buf = io.BytesIO()
        np.savez(buf, **out, key=np.array(key))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, buf.getvalue())
    _MEMO[key] = out
    return out


def measure(model: str, text: str, tokens: int, step: float, progress: bool = True) -> dict[str, np.ndarray]:
    """The curves, measured now (see the module doc): ``{"group:error": err [L, K]}``."""
    import torch

    from traces import prefix as prefix_mod
    from traces.capture import tokenize_prefix
    from traces.models import load_model

    lm = load_model(model, verbose=False)
    corpus = calibration_corpus(text)
    prefix = prefix_mod.resolve(prefix_mod.DEFAULT, lm)
    seq = prefix_mod.sequence(prefix, tokenize_prefix(lm.tokenizer, corpus, tokens))
    xs, hs, res, grads = _record(lm, seq)
    grid = greedy.levels(step)
    L = len(lm.mlps)
    err = {f"{g}:{e}": np.zeros((L, len(grid))) for g in GROUPS for e in ERRORS}
    bar = progress_bar(L, progress, f"schedule curves of {lm.info.model}", unit="layer")
    with torch.inference_mode():
        for i, mlp in enumerate(lm.mlps):
            x, h, grad = xs[i], hs[i], grads[i].double()
            y = mlp.down_proj(h)
            scale = {"residual": float((res[i].double() ** 2).sum()), "output": float((y.double() ** 2).sum())}
            for j, k in enumerate(grid):
                for g, d in (("upgate", (mlp(_top(x, k)) - y).double()), ("down", (mlp.down_proj(_top(h, k)) - y).double())):
                    sq = float((d ** 2).sum())
                    err[f"{g}:residual"][i, j] = sq / scale["residual"]
                    err[f"{g}:output"][i, j] = sq / scale["output"]
                    err[f"{g}:fisher"][i, j] = float(((d * grad).sum(-1) ** 2).sum())
            bar.update(1)
    bar.close()
    return err


def _top(a, keep: float):
    """``a`` with all but the top ``round(keep * N)`` of |a| per row set to 0 (at least one kept)."""
    import torch

    n = a.shape[-1]
    k = max(1, int(round(keep * n)))
    if k >= n:
        return a
    idx = a.abs().topk(k, dim=-1).indices
    return torch.zeros_like(a).scatter(-1, idx, a.gather(-1, idx))


def _record(lm, seq: list[int]) -> tuple[list[Any], ...]:
    """Each MLP's input x, GLU output h and the gradient of the text's summed NLL with respect to its
    output, and each decoder layer's output, over the positions after the first (position 0 is the
    attention sink, dense in every run)."""
    import torch

    L = len(lm.mlps)
    xs, hs, res, ys = ([None] * L for _ in range(4))
    names = {id(m): n for n, m in lm.model.named_modules()}
    modules = dict(lm.model.named_modules())

    def keep_output(i):
        def hook(mod, args, out):
            out.retain_grad()
            ys[i] = out
        return hook
    handles = [lm.model.get_input_embeddings().register_forward_hook(
        lambda mod, args, out: out.detach().requires_grad_())]      # gradients flow, weights need none
    for i, mlp in enumerate(lm.mlps):
        layer = modules[names[id(mlp)].rsplit(".", 1)[0]]
        handles.append(mlp.register_forward_pre_hook(
            lambda mod, args, kwargs, i=i: xs.__setitem__(i, _first(args, kwargs)[0, 1:].detach().clone()),
            with_kwargs=True))
        handles.append(mlp.down_proj.register_forward_pre_hook(
            lambda mod, args, kwargs, i=i: hs.__setitem__(i, _first(args, kwargs)[0, 1:].detach().clone()),
            with_kwargs=True))
        handles.append(mlp.register_forward_hook(keep_output(i)))
        handles.append(layer.register_forward_hook(lambda mod, args, out, i=i: res.__setitem__(
            i, (out[0] if isinstance(out, tuple) else out)[0, 1:].detach().clone())))
    try:
        with torch.enable_grad():
            ids = torch.tensor([seq])
            logits = lm.model(input_ids=ids, use_cache=False).logits[0, :-1].float()
            torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").backward()
    finally:
        for hd in handles:
            hd.remove()
    if any(v is None for v in (*xs, *hs, *res, *ys)) or any(y.grad is None for y in ys):
        raise DipsimError(f"model {lm.info.model}: could not record every layer's MLP input, output and gradient")
    return xs, hs, res, [y.grad[0, 1:].detach() for y in ys]


def _first(args, kwargs):
    return args[0] if args else next(iter(kwargs.values()))
