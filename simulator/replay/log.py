"""The result of a replay (or of the closed loop): per token x layer x group, what came from where."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import DipsimError


@dataclass
class GroupLog:
    """What one matrix group did, per token and layer."""

    name: str
    n_columns: int
    bytes_per_column: float
    capacity: np.ndarray     # [L] columns of DRAM cache
    k: np.ndarray            # [L] columns kept per token (nominal; threshold varies)
    selected: np.ndarray     # [T, L] int32
    hits: np.ndarray         # [T, L] int32
    missed_bits: np.ndarray  # [T, L, ceil(N / 8)] uint8: packed mask of the columns read from flash
    parts: tuple[str, ...] = ()   # the matrices one column holds a piece of (a neuron: its bundle)

    @property
    def misses(self) -> np.ndarray:
        return self.selected - self.hits

    def missed_mask(self, t: int) -> np.ndarray:
        """``[L, N]`` bool: the columns of token ``t`` read from flash."""
        return np.unpackbits(self.missed_bits[t], axis=1, count=self.n_columns).astype(bool)

    def missed(self, t: int, layer: int) -> np.ndarray:
        """Indices of the columns of token ``t``, ``layer`` read from flash."""
        return np.flatnonzero(np.unpackbits(self.missed_bits[t, layer], count=self.n_columns))


@dataclass
class AccessLog:
    """Result of :func:`replay`: per token x layer x group selected / hit / missed, and totals."""

    config: dict[str, Any]
    trace_meta: dict[str, Any]
    warmup: int
    groups: dict[str, GroupLog]
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return int(next(iter(self.groups.values())).selected.shape[0])

    @property
    def n_layers(self) -> int:
        return int(next(iter(self.groups.values())).selected.shape[1])

    def _span(self, part: str) -> slice:
        return {"measured": slice(self.warmup, None), "warmup": slice(0, self.warmup), "all": slice(None)}[part]

    def totals(self, part: str = "measured") -> dict[str, Any]:
        """Figures per token over the measured tokens (after warm-up), or ``part="warmup"`` / ``"all"``,
        in the names of the metric table (``simulator.metrics``): bytes per token are whole-model
        sums over layers, ``*_per_layer`` figures are means over layers."""
        sl = self._span(part)
        n = max(len(range(*sl.indices(self.n_tokens))), 0)
        out: dict[str, Any] = {"measured_tokens": n}
        sel_b = hit_b = miss_b = 0.0
        sel_c = hit_c = 0
        per = {}
        for g in self.groups.values():
            sel = g.selected[sl].astype(np.int64)
            hit = g.hits[sl].astype(np.int64)
            s, h = int(sel.sum()), int(hit.sum())
            per[g.name] = {
                "columns_per_layer": g.n_columns,
                "bytes_per_column": g.bytes_per_column,
                "keep": float(sel.sum() / max(n * self.n_layers * g.n_columns, 1)),
                "capacity_columns_per_layer": float(g.capacity.mean()),
                "selected_columns_per_token": s / max(n, 1),
                "hit_rate": h / s if s else 0.0,
                "flash_bytes_per_token": (s - h) * g.bytes_per_column / max(n, 1),
                "dram_bytes_per_token": h * g.bytes_per_column / max(n, 1),
            }
            sel_b += s * g.bytes_per_column
            hit_b += h * g.bytes_per_column
            miss_b += (s - h) * g.bytes_per_column
            sel_c += s
            hit_c += h
        out["hit_rate"] = hit_b / sel_b if sel_b else 0.0          # by bytes, across groups
        out["column_hit_rate"] = hit_c / sel_c if sel_c else 0.0
        out["flash_bytes_per_token"] = miss_b / max(n, 1)
        out["dram_bytes_per_token"] = hit_b / max(n, 1)
        out["mlp_bytes_per_token"] = sel_b / max(n, 1)
        out["groups"] = per
        return out

    def to_dict(self) -> dict[str, Any]:
        d = self.totals()
        d["warmup"] = self.totals("warmup") if self.warmup else None
        d["config"] = self.config
        d["trace"] = {k: self.trace_meta.get(k) for k in ("model", "n_layers", "d_model", "d_ff", "n_tokens",
                                                          "weight_dtype", "bytes_per_weight", "corpus_digest")}
        d["replay_seconds"] = self.seconds
        d.update(self.extra)
        return d

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        arrays = {}
        for name, g in self.groups.items():
            for f in ("capacity", "k", "selected", "hits", "missed_bits"):
                arrays[f"{name}.{f}"] = getattr(g, f)
        header = {"config": self.config, "trace_meta": self.trace_meta, "warmup": self.warmup, "seconds": self.seconds,
                  "groups": {n: {"n_columns": g.n_columns, "bytes_per_column": g.bytes_per_column,
                                 "parts": list(g.parts)} for n, g in self.groups.items()}, "extra": self.extra}
        from common.io import atomic

        with atomic(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, __header__=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "AccessLog":
        try:
            z = np.load(path)
            header = json.loads(bytes(z["__header__"]).decode())
        except (OSError, ValueError, KeyError) as e:
            raise DipsimError(f"{path}: not an access log ({e})") from None
        groups = {n: GroupLog(n, g["n_columns"], g["bytes_per_column"], *(z[f"{n}.{f}"] for f in
                  ("capacity", "k", "selected", "hits", "missed_bits")), tuple(g.get("parts", ())))
                  for n, g in header["groups"].items()}
        return cls(header["config"], header["trace_meta"], header["warmup"], groups, header["seconds"], header["extra"])

