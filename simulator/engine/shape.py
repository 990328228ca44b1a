"""The model's static shape (what every token reads besides the MLP) and a device's models."""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..devices.compute import ComputeModel
from ..devices.dram import DramModel
from ..devices.flash import FlashModel
from ..hardware import load_device


@dataclass(frozen=True)
class ModelShape:
    """Static parts of the model that every token reads, from trace metadata (Llama-like fallbacks)."""

    n_layers: int
    d_model: int
    d_ff: int
    attn_params_per_layer: int
    embed_params: int
    lm_head_params: int
    static_bytes_per_weight: float
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    context: int
    kv_bytes_per_value: float = 2.0
    tied_lm_head: bool | None = None  # None: a trace from before the field; guessed from equal sizes
    adapter_bytes: float = 0.0       # a LoRA adapter kept beside the weights (read every token, layer by layer)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> "ModelShape":
        dm = int(meta["d_model"])
        n_heads = int(meta.get("n_heads") or max(dm // 128, 1))
        head_dim = int(meta.get("head_dim") or dm // n_heads)
        n_kv = int(meta.get("n_kv_heads") or max(n_heads // 4, 1))
        vocab = int(meta.get("vocab_size") or 32000)
        attn = int(meta.get("attn_params_per_layer") or (2 * dm * n_heads * head_dim + 2 * dm * n_kv * head_dim))
        return cls(n_layers=int(meta["n_layers"]), d_model=dm, d_ff=int(meta["d_ff"]), attn_params_per_layer=attn,
                   embed_params=int(meta.get("embed_params") or vocab * dm),
                   lm_head_params=int(meta.get("lm_head_params") or vocab * dm),
                   static_bytes_per_weight=float(meta.get("static_bytes_per_weight") or meta["bytes_per_weight"]),
                   n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim, vocab_size=vocab,
                   context=int(meta.get("context") or 2048),
                   tied_lm_head=None if meta.get("tied_lm_head") is None else bool(meta["tied_lm_head"]),
                   adapter_bytes=float(meta.get("adapter_bytes") or 0.0))

    def kv_bytes(self, position: int | np.ndarray) -> np.ndarray:
        """KV cache bytes one layer reads at a position (keys and values of every earlier token)."""
        return 2 * self.n_kv_heads * self.head_dim * self.kv_bytes_per_value * np.asarray(position, dtype=float)

    @property
    def attn_bytes(self) -> float:
        """Static bytes a layer reads every token besides its MLP: attention and norms (and an adapter's share)."""
        return self.attn_params_per_layer * self.static_bytes_per_weight + self.adapter_bytes / self.n_layers

    @property
    def head_bytes(self) -> float:
        return self.lm_head_params * self.static_bytes_per_weight

    @property
    def static_weight_bytes(self) -> float:
        tied = self.tied_lm_head  # a tied head shares the embedding's bytes
        if tied is None:
            tied = self.embed_params == self.lm_head_params
        emb = self.embed_params * self.static_bytes_per_weight
        return self.n_layers * self.attn_bytes + emb + (0.0 if tied else self.head_bytes)


@dataclass(frozen=True)
class Models:
    name: str
    flash: Any
    dram: Any
    compute: Any
    dram_capacity: float | None
    flash_energy: float | None          # J per byte read
    spec: Any = None


def device_models(device: Any) -> Models:
    """Flash / DRAM / compute models of a device given by name, YAML path, or a loaded Device
    (loaded profiles are kept per name and file version: sweeps ask for the same few many times)."""
    dev = _load(str(device), _version(device)) if isinstance(device, (str, os.PathLike)) else device
    flash = FlashModel.from_spec(dev.flash)
    dram = DramModel.from_spec(dev.dram)
    compute = ComputeModel.from_spec(dev.compute) if getattr(dev, "compute", None) is not None else None
    cap = getattr(dev, "usable_dram_bytes", None) or getattr(dev, "dram_bytes", None)
    e_flash = getattr(dev.flash, "read_energy_per_byte", None)
    return Models(dev.name, flash, dram, compute, cap, e_flash, dev)


def _version(device: Any) -> tuple:
    p = Path(str(device))
    try:
        st = p.stat() if p.suffix.lower() in (".yaml", ".yml") else None
    except OSError:
        st = None
    return (st.st_mtime_ns, st.st_size) if st else ()


@lru_cache(maxsize=64)
def _load(device: str, version: tuple):
    return load_device(device)
