"""LoRA recovery of DIP's accuracy loss: rank-r adapters trained with DIP's masks in the forward.

LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022) adds to a frozen
linear layer ``y = W x`` a low-rank path ``(alpha / r) B A x`` (``A [r, in]`` random, ``B [out, r]``
zero at the start, so training starts from the unchanged model) and trains only ``A`` and ``B``.
Here the adapters sit on W_gate, W_up and W_down of every layer (optionally the attention
projections) and train with DIP's masks applied (``torchmask.DIPMasks``: top-k |x| before W_up and
W_gate, top-k |h| before W_down, recomputed every step from the current activations). The LoRA path
sees the *masked* input, like ``W`` does, so the adapter never reads a dropped column and DIP's
column masking keeps its meaning; merging ``W + (alpha / r) B A`` is then exactly equivalent, which
is how the accuracy loop runs an adapter (``Adapter.apply``): DIP or DIP-CA masks on the merged
weights, so both policies use the same adapter.

Teacher: ``loss="kl"`` (default) -- KL(dense model || masked model + adapter) of the next-token
distributions, the dense model's own forward (masks and adapter off) on the same text; or
``loss="nll"`` -- the next-token loss of the text. Training text: ``methods.data`` (disjoint from the
evaluation text, checked). An adapter's bytes (``2 B`` per parameter, fp16, as it would be shipped)
count as static DRAM.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.errors import DipsimError
from traces.prefix import resolve as resolve_prefix

from common import store

from . import data
from .torchmask import DIPMasks
from .weights import Swap, matrices

LOSSES = ("kl", "nll")


@dataclass
class Adapter(store.MethodObject):
    """LoRA factors per matrix name (``A [r, in]``, ``B [out, r]``, torch float32) and metadata."""

    KIND = "adapter"
    A: dict[str, Any]
    B: dict[str, Any]

    @property
    def scale(self) -> float:
        return float(self.meta["alpha"]) / float(self.meta["rank"])

    @property
    def tag(self) -> str:
        return self.tagged(f"lora-r{self.meta['rank']}")

    def n_params(self) -> int:
        return int(sum(a.numel() for a in self.A.values()) + sum(b.numel() for b in self.B.values()))

    def nbytes(self, bytes_per_param: float = 2.0) -> float:
        """Static DRAM the adapter takes (default fp16)."""
        return self.n_params() * float(bytes_per_param)

    def delta(self, name: str):
        return (self.B[name] @ self.A[name]) * self.scale

    def apply(self, lm) -> Swap:
        """Merge the adapter into ``lm``'s current weights (a context manager restoring them bit for bit)."""
        store.check_model(self.meta, lm, self.meta.get("path", "adapter"))
        sw = Swap(lm, tag=self.tag)
        try:
            for name in self.A:
                cur, d = sw.current(name), self.delta(name)
                if tuple(cur.shape) != tuple(d.shape):
                    raise DipsimError(f"{self.meta.get('path', 'adapter')}: {name} is {list(d.shape)} in the "
                                      f"adapter and {list(cur.shape)} in the model")
                sw.set(name, cur.float() + d)
        except BaseException:
            sw.restore()
            raise
        return sw

    def file_tensors(self) -> dict[str, np.ndarray]:
        tensors = {f"{n}.lora_A": self.A[n].detach().numpy() for n in self.A}
        tensors.update({f"{n}.lora_B": self.B[n].detach().numpy() for n in self.B})
        return tensors

    def file_fields(self) -> dict[str, Any]:
        return {"params": self.n_params(), "fp16_bytes": self.nbytes(2.0)}


def load_adapter(path: str | os.PathLike) -> Adapter:
    import torch

    tensors, meta = store.load(path, "adapter")
    names = sorted({k.rsplit(".", 1)[0] for k in tensors})
    try:
        A = {n: torch.from_numpy(tensors[f"{n}.lora_A"].copy()) for n in names}
        B = {n: torch.from_numpy(tensors[f"{n}.lora_B"].copy()) for n in names}
    except KeyError as e:
        raise DipsimError(f"{path}: adapter tensor {e.args[0]!r} missing") from None
    r = meta["rank"]
    for n in names:
        a, b = A[n].shape, B[n].shape
        if len(a) != 2 or len(b) != 2 or a[0] != r or b[1] != r:
            raise DipsimError(f"{path}: adapter {n!r} has lora_A {list(a)} and lora_B {list(b)}, expected "
                              f"[{r}, in] and [out, {r}] (rank {r})")
    meta["path"] = str(path)
    return Adapter(A, B, meta=meta)


def init_adapter(lm, rank: int = 16, alpha: float | None = None, targets=("mlp",), seed: int = 0) -> Adapter:
    """Fresh factors: ``A`` Kaiming-uniform (as the LoRA reference code), ``B = 0`` (the model is unchanged).
    ``alpha`` defaults to ``2 * rank``: the path's scale ``alpha / r`` stays 2 whatever the rank, so a
    learning rate found at one rank carries over (Hu et al. keep alpha fixed for the same reason)."""
    import torch

    data.check_int("rank", rank, 1)
    alpha = 2.0 * rank if alpha is None else alpha
    if not float(alpha) > 0:
        raise DipsimError(f"alpha must be > 0, got {alpha!r}")
    gen = torch.Generator().manual_seed(seed)
    A, B = {}, {}
    for name, mod in matrices(lm, targets).items():
        out_f, in_f = mod.weight.shape
        bound = 1.0 / math.sqrt(in_f)      # kaiming_uniform_(a=sqrt(5)) on [r, in]
        A[name] = (torch.rand((rank, in_f), generator=gen) * 2 - 1) * bound
        B[name] = torch.zeros((out_f, rank))
    meta = {**store.model_meta(lm), "rank": rank, "alpha": float(alpha), "targets": list(targets)}
    return Adapter(A, B, meta=meta)


class LoRAHooks:
    """The unmerged LoRA path for training: a forward hook on each adapted linear adds
    ``scale * B (A x)`` for the input ``x`` the layer saw (after DIP's masking pre-hooks)."""

    def __init__(self, lm, adapter: Adapter):
        self.mods = matrices(lm, adapter.meta["targets"])
        self.adapter, self.enabled, self.handles = adapter, True, []

    def _hook(self, name: str):
        import torch.nn.functional as F

        A, B, s = self.adapter.A[name], self.adapter.B[name], self.adapter.scale

        def hook(mod, args, kwargs, out):
            if not self.enabled:
                return None
            x = args[0] if args else next(iter(kwargs.values()))
            return out + F.linear(F.linear(x, A), B) * s
        return hook

    def __enter__(self) -> "LoRAHooks":
        for name, mod in self.mods.items():
            self.handles.append(mod.register_forward_hook(self._hook(name), with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def _lr_at(step: int, frac: float, lr: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 10% of ``lr`` as the run's progress
    ``frac`` (0..1; steps or time, whichever is further) goes on."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(max(frac, 0.0), 1.0))))


def _loss(lm, ids, loss: str, masks: DIPMasks, hooks: LoRAHooks, autocast: str | None = None):
    import torch
    import torch.nn.functional as F

    def forward():
        with torch.autocast("cpu", dtype=getattr(torch, autocast or "bfloat16"), enabled=autocast is not None):
            return lm.model(input_ids=ids, use_cache=False).logits[:, :-1].float()

    logits = forward()
    if loss == "nll":
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    with torch.no_grad(), masks.off():
        hooks.enabled = False
        try:
            teacher = torch.log_softmax(forward(), dim=-1)
        finally:
            hooks.enabled = True
    student = torch.log_softmax(logits, dim=-1)
    return (teacher.exp() * (teacher - student)).sum(-1).mean()


AUTOCASTS = (None, "bfloat16")


def _check_train_args(loss: str, steps: int, batch: int, seq_len: int, lr: float, autocast) -> None:
    if loss not in LOSSES:
        raise DipsimError(f"unknown LoRA loss {loss!r}; allowed: {', '.join(LOSSES)}")
    if autocast not in AUTOCASTS:
        raise DipsimError(f"autocast must be None (float32) or 'bfloat16', got {autocast!r}")
    for name, v, lo in (("steps", steps, 1), ("batch", batch, 1), ("seq_len", seq_len, 2)):
        data.check_int(name, v, lo)
    if not float(lr) > 0:
        raise DipsimError(f"lr must be > 0, got {lr!r}")


def train_lora(lm, *, rank: int = 16, alpha: float | None = None, targets=("mlp",), keep: float = 0.5,
               keep_up: float | None = None, keep_down: float | None = None, loss: str = "kl", steps: int = 60,
               batch: int = 4, seq_len: int = 256, lr: float = 2e-3, warmup: int = 5, seed: int = 0,
               offset: int = data.TRAIN_OFFSET, corpus=None, max_seconds: float | None = None,
               autocast: str | None = None, log_every: int = 1, progress: bool = False,
               prefix_token: Any = data.PREFIX_DEFAULT) -> Adapter:
    """Train a LoRA adapter on ``lm`` with DIP masks at ``keep`` (or ``keep_up`` / ``keep_down``) in the
    forward; AdamW on A and B only, ``steps`` steps of ``batch`` sequences of ``seq_len`` tokens of the
    learning text (windows in a seeded random order, reused if the text runs out), learning rate with
    warm-up and cosine decay. ``max_seconds``: a time budget -- the decay follows the elapsed share of it
    when that is ahead of the steps' share, and training stops when it is spent (the metadata says so).
    ``autocast="bfloat16"`` runs the forwards in bfloat16 autocast (1.4-1.7x faster on this AVX-512-BF16
    CPU; the adapter's factors and the optimizer stay float32). ``prefix_token``: what starts every
    window, as in evaluation (``traces.prefix``; default the model's own convention). ``lm`` is unchanged."""
    import torch

    from traces.corpus import default_corpus

    _check_train_args(loss, steps, batch, seq_len, lr, autocast)
    corpus = corpus or default_corpus()
    adapter = init_adapter(lm, rank, alpha, targets, seed)
    ku, kd = keep if keep_up is None else keep_up, keep if keep_down is None else keep_down
    prefix = resolve_prefix(prefix_token, lm)
    n_windows = len(data.training_ids(lm.tokenizer, corpus, offset)) // (seq_len - (prefix is not None))
    seqs = data.training_sequences(lm.tokenizer, n_windows, seq_len, corpus=corpus, offset=offset, prefix_token=prefix)
    order = torch.randperm(n_windows, generator=torch.Generator().manual_seed(seed))
    params = list(adapter.A.values()) + list(adapter.B.values())
    frozen = [(p, p.requires_grad) for p in lm.model.parameters()]
    curve: list[list[float]] = []
    t0 = time.perf_counter()
    done = 0
    try:
        for p, _ in frozen:
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        with torch.enable_grad(), DIPMasks(lm, ku, kd) as masks, LoRAHooks(lm, adapter) as hooks:
            for step in range(steps):
                frac = step / steps
                if max_seconds is not None:   # a time budget: the schedule runs on time, and ends with it
                    frac = max(frac, (time.perf_counter() - t0) / max(max_seconds, 1e-9))
                    if frac >= 1.0:
                        break
                for g in opt.param_groups:
                    g["lr"] = _lr_at(step, frac, lr, warmup)
                pick = order[torch.arange(step * batch, (step + 1) * batch) % n_windows]
                value = _loss(lm, seqs[pick], loss, masks, hooks, autocast)
                opt.zero_grad(set_to_none=True)
                value.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                done, value = step + 1, value.item()
                if step % log_every == 0 or step == steps - 1:
                    curve.append([step, value, time.perf_counter() - t0])
                    if progress:
                        print(f"lora step {step}: {loss} {value:.4f} ({curve[-1][2]:.0f} s)", flush=True)
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
        for p in params:
            p.requires_grad_(False)
    adapter.meta.update(masking={"masking": "dip", "keep_up": float(ku), "keep_down": float(kd)}, loss=loss,
                        steps=steps, steps_done=done, stopped_early=done < steps, batch=batch, seq_len=seq_len,
                        lr=lr, warmup=warmup, autocast=autocast, optimizer="AdamW",
                        schedule="linear warm-up, cosine to 0.1 lr over max(step, time) progress", seed=seed,
                        tokens_seen=done * batch * seq_len, loss_curve=curve,
                        seconds=time.perf_counter() - t0, torch_threads=torch.get_num_threads(),
                        training_text={"offset": offset, "corpus": corpus.name, "corpus_digest": corpus.digest,
                                       "windows": n_windows, "window_tokens": seq_len, "prefix_token": prefix})
    return adapter


class _NoHooks:
    enabled = True


def masked_loss(lm, adapter: Adapter | None, ids, *, loss: str = "nll", keep: float = 0.5) -> float:
    """The training objective on ``ids`` (``[batch, positions]``) with DIP masks at ``keep`` and the
    adapter's unmerged path (none: the masked base model), without gradient."""
    import torch

    if loss not in LOSSES:
        raise DipsimError(f"unknown LoRA loss {loss!r}; allowed: {', '.join(LOSSES)}")
    with torch.no_grad(), DIPMasks(lm, keep, keep) as masks:
        if adapter is None:
            return float(_loss(lm, ids, loss, masks, _NoHooks()))
        with LoRAHooks(lm, adapter) as hooks:
            return float(_loss(lm, ids, loss, masks, hooks))


def loss_curve(adapter: Adapter) -> np.ndarray:
    """``[points, 3]``: step, loss, seconds."""
    return np.asarray(adapter.meta.get("loss_curve", []), dtype=float).reshape(-1, 3)
