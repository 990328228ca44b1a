"""A model variant: the MLP matrices of a model replaced by pruned ones, stored as the sparse format.

A variant is not a mask: accuracy in the loop runs its weights (``Variant.apply`` / :func:`apply_variant`,
or a configuration's ``variant`` key). The file holds, per matrix, exactly the sparse storage format
whose bytes the memory model counts -- the kept values (float32 here, the dequantized domain the
model runs in) and a bitmask of kept positions (1 bit per weight) -- plus JSON metadata: method,
sparsity, calibration text and tokens, the model, per-matrix shapes and nonzero counts.

Bytes of a matrix of ``n`` weights with ``nnz`` kept, at the source model's bytes per weight ``b``
(0.625 B for SmolLM2's Q4_1):

* ``dense``:    ``n * b``
* ``bitmask``:  ``nnz * b + ceil(n / 8)``   -- values + 1 bit per weight (the format stored here)
* ``index16``:  ``nnz * (b + 2)``           -- values + a 16-bit column index per value (row offsets,
  a few bytes per row, left out)

So 50% unstructured sparsity of a 0.625 B/weight model stores 0.4375 B/weight with a bitmask (70% of
dense) but 1.3125 B/weight with 16-bit indices (210%): the index costs more than the 4-bit value it
locates. Every column of every matrix still holds half its weights, so a token that needs the whole
matrix still reads every column (only smaller ones). Kept values are not re-quantized to the source
format: SparseGPT's updated weights would lose a little more in a real 4-bit deployment.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.errors import DipsimError

from common import store
from .weights import Swap

FORMATS = ("dense", "bitmask", "index16")


def matrix_bytes(n: int, nnz: int, bytes_per_weight: float) -> dict[str, float]:
    """Stored bytes of one matrix of ``n`` weights with ``nnz`` kept, in each of :data:`FORMATS`."""
    b = float(bytes_per_weight)
    return {"dense": n * b, "bitmask": nnz * b + math.ceil(n / 8), "index16": nnz * (b + 2.0)}


@dataclass
class Variant(store.MethodObject):
    """Pruned matrices by name (``weights``: float32 tensors, zero where ``pruned``) and metadata."""

    KIND = "variant"
    weights: dict[str, Any]
    pruned: dict[str, Any]

    @property
    def tag(self) -> str:
        return self.tagged(f"{self.meta.get('method', 'variant')}-{self.meta.get('sparsity')}")

    def sparsity(self) -> float:
        n = sum(int(m.numel()) for m in self.pruned.values())
        return sum(int(m.sum()) for m in self.pruned.values()) / max(n, 1)

    def stored_bytes(self, bytes_per_weight: float | None = None) -> dict[str, float]:
        """Total bytes of all matrices in each format, and ``<format>_per_weight``."""
        b = self.meta["bytes_per_weight"] if bytes_per_weight is None else bytes_per_weight
        tot = {f: 0.0 for f in FORMATS}
        n_all = 0
        for m in self.pruned.values():
            n = int(m.numel())
            n_all += n
            for f, v in matrix_bytes(n, n - int(m.sum()), b).items():
                tot[f] += v
        tot.update({f"{f}_per_weight": tot[f] / max(n_all, 1) for f in FORMATS})
        tot["weights"] = n_all
        return tot

    def apply(self, lm) -> Swap:
        """Put the pruned matrices into ``lm`` (a context manager restoring the dense ones, bit for bit)."""
        store.check_model(self.meta, lm, self.meta.get("path", "variant"))
        return Swap(lm, self.weights, tag=self.tag)

    def file_tensors(self) -> dict[str, np.ndarray]:
        """The kept values and a bitmask of the kept positions per matrix (the ``bitmask`` format)."""
        tensors = {}
        for name, w in self.weights.items():
            kept = ~self.pruned[name].numpy().reshape(-1)
            tensors[f"{name}.values"] = w.numpy().reshape(-1)[kept].astype(np.float32)
            tensors[f"{name}.mask"] = np.packbits(kept)
        return tensors

    def file_fields(self) -> dict[str, Any]:
        shapes = {name: {"shape": list(w.shape), "nnz": int(w.numel() - int(self.pruned[name].sum()))}
                  for name, w in self.weights.items()}
        return {"matrices": shapes, "bytes": self.stored_bytes()}


def load_variant(path: str | os.PathLike) -> Variant:
    """Read a variant file back into dense float32 matrices (and their pruned masks)."""
    import torch

    tensors, meta = store.load(path, "variant")
    weights, pruned = {}, {}
    if not meta.get("matrices"):
        raise DipsimError(f"{path}: a variant file without matrices: nothing to put into the model")
    for name, info in meta["matrices"].items():
        shape = tuple(info["shape"])
        n = int(np.prod(shape))
        try:
            kept = np.unpackbits(tensors[f"{name}.mask"], count=n).astype(bool)
            values = tensors[f"{name}.values"]
        except KeyError:
            raise DipsimError(f"{path}: matrix {name!r} is missing its values or mask") from None
        if values.size != kept.sum():
            raise DipsimError(f"{path}: matrix {name!r} has {values.size} values for {int(kept.sum())} kept positions")
        w = np.zeros(n, np.float32)
        w[kept] = values
        weights[name] = torch.from_numpy(w.reshape(shape))
        pruned[name] = torch.from_numpy(~kept.reshape(shape))
    meta["path"] = str(path)
    return Variant(weights, pruned, meta=meta)


def apply_variant(lm, path: str | os.PathLike) -> Swap:
    """``with apply_variant(lm, "pruned.safetensors"): evaluate(lm, ...)`` -- the variant in place."""
    return load_variant(path).apply(lm)


def bytes_per_weight(path_or_meta: str | os.PathLike | dict[str, Any], fmt: str = "bitmask") -> float:
    """Average stored bytes per MLP weight of a variant file in ``fmt`` -- a number to give replay or the
    accuracy loop as ``weight_format`` so that the cache budget and flash traffic count the sparse
    format (every column is still read when the masking is dense)."""
    if fmt not in FORMATS:
        raise DipsimError(f"unknown sparse format {fmt!r}; allowed: {', '.join(FORMATS)}")
    meta = path_or_meta if isinstance(path_or_meta, dict) else store.read_meta(path_or_meta, "variant")
    if f"{fmt}_per_weight" not in meta["bytes"]:
        raise DipsimError(f"{meta.get('path', 'variant')}: no stored size of the {fmt} format; it has "
                          f"{', '.join(meta['bytes'])}")
    return float(meta["bytes"][f"{fmt}_per_weight"])
