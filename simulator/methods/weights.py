"""Which weight matrices the methods touch, and swapping them in and out of a loaded model.

Matrices are named by ``layers.<i>.mlp.<proj>`` (``gate_proj``, ``up_proj``, ``down_proj``, or Phi-3's
fused ``gate_up_proj``) and ``layers.<i>.attn.<proj>`` (``q_proj``, ``k_proj``, ``v_proj``,
``o_proj``; fused ``qkv_proj``). :class:`Swap` replaces a matrix by pointing the parameter at a new
tensor, never writing into the old one: the dequantized weights are memory-mapped from the model
cache, and restoring puts the very same tensor back, so the dense model is restored bit for bit.
"""
from __future__ import annotations

from typing import Any

from common.errors import DipsimError

MLP_PROJS = ("gate_proj", "up_proj", "gate_up_proj", "down_proj")
ATTN_PROJS = ("q_proj", "k_proj", "v_proj", "qkv_proj", "o_proj")
#: what the ``targets`` option of LoRA / pruning may name
TARGETS = ("mlp", "attn")


def mlp_matrices(lm) -> dict[str, Any]:
    """``{name: nn.Linear}`` of every gated MLP's matrices, in layer order."""
    out = {}
    for i, mlp in enumerate(lm.mlps):
        for p in MLP_PROJS:
            mod = getattr(mlp, p, None)
            if mod is not None:
                out[f"layers.{i}.mlp.{p}"] = mod
    return out


def decoder_layers(lm) -> list:
    """The decoder layer holding each MLP (its parent module), in layer order."""
    parents = {}
    for mod in lm.model.modules():
        for child in mod.children():
            parents[id(child)] = mod
    layers = [parents.get(id(m)) for m in lm.mlps]
    if any(layer is None for layer in layers):
        raise DipsimError(f"cannot find the decoder layers of {lm.info.model}")
    return layers


def attn_matrices(lm) -> dict[str, Any]:
    """``{name: nn.Linear}`` of every decoder layer's attention projections."""
    out = {}
    for i, layer in enumerate(decoder_layers(lm)):
        attn = getattr(layer, "self_attn", None) or getattr(layer, "attention", None)
        for p in ATTN_PROJS:
            mod = getattr(attn, p, None) if attn is not None else None
            if mod is not None:
                out[f"layers.{i}.attn.{p}"] = mod
    if not out:
        raise DipsimError(f"{lm.info.model}: no attention projections found (q_proj/k_proj/v_proj/o_proj)")
    return out


def matrices(lm, targets: tuple[str, ...] | list[str] = ("mlp",)) -> dict[str, Any]:
    """Matrices of the requested ``targets`` (``mlp``, ``attn``)."""
    targets = tuple(targets)
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
        raise DipsimError(f"targets must be a non-empty list of {', '.join(TARGETS)}, got {list(targets)}")
    out = {}
    if "mlp" in targets:
        out.update(mlp_matrices(lm))
    if "attn" in targets:
        out.update(attn_matrices(lm))
    return out


class Swap:
    """Replace weight matrices of ``lm`` and restore the originals (the same tensors) afterwards.

        with Swap(lm, {"layers.0.mlp.up_proj": w}): ...     # or sw = Swap(lm); sw.set(name, w); sw.restore()

    While active, ``lm.variant_tag`` is ``tag`` (a string naming what was applied), so that results
    computed on the changed model are never stored as the base model's.
    """

    def __init__(self, lm, new: dict[str, Any] | None = None, tag: str | None = None):
        self.lm, self.tag = lm, tag
        self.mods = {**mlp_matrices(lm)}
        self.saved: dict[str, Any] = {}
        self.prev_tag = getattr(lm, "variant_tag", None)
        if tag is not None:
            lm.variant_tag = tag if self.prev_tag is None else f"{self.prev_tag}+{tag}"
        for name, w in (new or {}).items():
            self.set(name, w)

    def _module(self, name: str):
        if name not in self.mods and ".attn." in name:
            self.mods.update(attn_matrices(self.lm))
        mod = self.mods.get(name)
        if mod is None:
            raise DipsimError(f"{self.lm.info.model} has no weight matrix {name!r}")
        return mod

    def set(self, name: str, w) -> None:
        mod = self._module(name)
        if tuple(w.shape) != tuple(mod.weight.shape):
            raise DipsimError(f"{name}: shape {list(w.shape)} does not match the model's {list(mod.weight.shape)}")
        if name not in self.saved:
            self.saved[name] = mod.weight.data
        mod.weight.data = w.to(self.saved[name].dtype)

    def current(self, name: str):
        return self._module(name).weight.data

    def restore(self) -> None:
        for name, w in self.saved.items():
            self.mods[name].weight.data = w
        self.saved = {}
        if self.tag is not None:
            if self.prev_tag is None:
                self.lm.__dict__.pop("variant_tag", None)
            else:
                self.lm.variant_tag = self.prev_tag
            self.tag = None

    def __enter__(self) -> "Swap":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()
