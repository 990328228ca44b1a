"""Prune the MLP matrices of a loaded model into a :class:`~.variants.Variant`: SparseGPT or magnitude.

SparseGPT runs sequentially, layer by layer, as the paper does (Frantar & Alistarh, ICML 2023,
arXiv 2301.00774, Sec. 4 "Setup"): the calibration sequences' hidden states enter layer ``l`` from
layers ``0..l-1`` *already pruned*, so each layer's updates also absorb the error of the ones before.
Inside a layer the order is true-sequential too: W_gate and W_up are pruned from the Hessian of the
MLP input ``x``; then ``h = act(W'_gate x) * (W'_up x)`` is recomputed with the pruned pair and
W_down is pruned from the Hessian of that ``h``; then the whole pruned layer runs to give the next
layer's inputs. Decoder layers are called directly with the keyword arguments the model passed to
the first one (position embeddings, mask), so each layer runs ~2x over the calibration tokens and
the model never runs end to end more than once.

Calibration text comes from ``methods.data`` (disjoint from the evaluation text, checked).
"""
from __future__ import annotations

import time
from typing import Any

from common.errors import DipsimError

from common import store

from . import data
from .magnitude import magnitude_prune
from .sparsegpt import Hessian, check_sparsity, sparsegpt_prune
from .variants import Variant
from .weights import Swap, decoder_layers, mlp_matrices

METHODS = ("sparsegpt", "magnitude")


class _Stop(Exception):
    """Raised by a hook to end a forward once it has what it needs."""


class LayerInputs:
    """The hidden states entering decoder layer ``l`` for every calibration batch, advanced layer by
    layer (``advance``), with the keyword arguments the model gives its layers."""

    def __init__(self, lm, seqs, batch: int):
        import torch

        from traces.models import decoder

        self.layers = decoder_layers(lm)
        self.hidden: list = []
        self.kwargs: list[dict[str, Any]] = []

        def grab(mod, args, kwargs):
            kw = dict(kwargs)
            self.hidden.append(args[0] if args else kw.pop("hidden_states"))
            self.kwargs.append(kw)
            raise _Stop

        handle = self.layers[0].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            with torch.no_grad():
                for b in range(0, seqs.shape[0], batch):
                    try:
                        decoder(lm.model)(input_ids=seqs[b:b + batch], use_cache=False)
                    except _Stop:
                        pass
        finally:
            handle.remove()

    def run(self, i: int, *, advance: bool) -> None:
        """Run layer ``i`` over every batch (hooks see its inputs); ``advance``: its outputs become the
        inputs of layer ``i + 1``. A hook may raise :class:`_Stop` to skip the rest of the layer."""
        import torch

        with torch.no_grad():
            for b, (h, kw) in enumerate(zip(self.hidden, self.kwargs)):
                try:
                    out = self.layers[i](h, **kw)
                except _Stop:
                    continue
                if advance:
                    self.hidden[b] = out[0] if isinstance(out, tuple) else out


def _accumulating(hess: list, kept: list | None = None):
    """A pre-hook adding the module's input to the Hessian in ``hess`` (created on first use; also
    appended to ``kept`` if given), then stopping the forward: nothing after it is needed."""
    def hook(mod, args, kwargs):
        a = args[0] if args else next(iter(kwargs.values()))
        if not hess:
            hess.append(Hessian(a.shape[-1]))
        hess[0].add(a)
        if kept is not None:
            kept.append(a.detach())
        raise _Stop
    return hook


def _mlp_inputs(runner: LayerInputs, mlp, i: int) -> tuple[Hessian, list]:
    """Pass 1 over layer ``i``: the MLP inputs of every batch and their Hessian (the MLP is skipped)."""
    xs: list = []
    hess: list[Hessian] = []
    handle = mlp.register_forward_pre_hook(_accumulating(hess, xs), with_kwargs=True)
    try:
        runner.run(i, advance=False)
    finally:
        handle.remove()
    return hess[0], xs


def _down_hessian(mlp, xs: list) -> Hessian:
    """Pass 2: ``h`` of the (already pruned) gate/up for the stored MLP inputs, accumulated."""
    import torch

    hess: list[Hessian] = []
    handle = mlp.down_proj.register_forward_pre_hook(_accumulating(hess), with_kwargs=True)
    try:
        with torch.no_grad():
            for x in xs:
                try:
                    mlp(x)
                except _Stop:
                    pass
    finally:
        handle.remove()
    return hess[0]


def prune_model(lm, method: str = "sparsegpt", sparsity: float = 0.5, *, n_seqs: int = 64, seq_len: int = 512,
                batch: int = 8, blocksize: int = 128, percdamp: float = 0.01, offset: int = data.TRAIN_OFFSET,
                corpus=None, progress: bool = False, prefix_token: Any = data.PREFIX_DEFAULT) -> Variant:
    """Prune every MLP matrix (gate, up, down of every layer) of ``lm`` to ``sparsity``; ``lm`` itself is
    left as it was. SparseGPT calibrates on ``n_seqs`` sequences of ``seq_len`` tokens (the prefix
    token as evaluation runs it, ``traces.prefix``, then text) from the learning text
    (``corpus.text[offset:]``); magnitude needs no calibration."""
    if method not in METHODS:
        raise DipsimError(f"unknown pruning method {method!r}; allowed: {', '.join(METHODS)}")
    sparsity = check_sparsity(sparsity)
    t0 = time.perf_counter()
    mats = mlp_matrices(lm)
    meta: dict[str, Any] = {**store.model_meta(lm), "method": method, "sparsity": sparsity, "targets": ["mlp"]}
    if method == "magnitude":
        weights, pruned = {}, {}
        for name, mod in mats.items():
            weights[name], pruned[name] = magnitude_prune(mod.weight.data, sparsity)
        meta["seconds"] = time.perf_counter() - t0
        return Variant(weights, pruned, meta=meta)

    for name, v, lo in (("n_seqs", n_seqs, 1), ("seq_len", seq_len, 2), ("batch", batch, 1)):
        data.check_int(name, v, lo)
    from traces.corpus import default_corpus

    corpus = corpus or default_corpus()
    from traces.prefix import resolve

    prefix = resolve(prefix_token, lm)
    seqs = data.training_sequences(lm.tokenizer, n_seqs, seq_len, corpus=corpus, offset=offset, prefix_token=prefix)
    meta.update(blocksize=blocksize, percdamp=percdamp, calibration={
        "n_seqs": n_seqs, "seq_len": seq_len, "tokens": int(seqs.numel()), "offset": offset,
        "corpus": corpus.name, "corpus_digest": corpus.digest, "prefix_token": prefix})
    weights, pruned = {}, {}
    swap = Swap(lm)   # the pruned layers stay in the model while later layers calibrate, then restored
    try:
        runner = LayerInputs(lm, seqs, batch)
        from common.progress import progress_bar

        bar = progress_bar(len(lm.mlps), progress, f"sparsegpt {sparsity:g}", unit="layer")
        for i, mlp in enumerate(lm.mlps):
            hx, xs = _mlp_inputs(runner, mlp, i)
            in_x = [n for n in mats if n.startswith(f"layers.{i}.mlp.") and not n.endswith("down_proj")]
            for name in in_x:
                weights[name], pruned[name] = sparsegpt_prune(mats[name].weight.data, hx.mean(), sparsity,
                                                              blocksize=blocksize, percdamp=percdamp)
                swap.set(name, weights[name])
            hh = _down_hessian(mlp, xs)
            del xs
            name = f"layers.{i}.mlp.down_proj"
            weights[name], pruned[name] = sparsegpt_prune(mats[name].weight.data, hh.mean(), sparsity,
                                                          blocksize=blocksize, percdamp=percdamp)
            swap.set(name, weights[name])
            if i + 1 < len(lm.mlps):
                runner.run(i, advance=True)
            bar.update(1)
        bar.close()
    finally:
        swap.restore()
    meta["seconds"] = time.perf_counter() - t0
    return Variant(weights, pruned, meta=meta)
