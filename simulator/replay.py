"""Replay a masking policy and a DRAM cache policy over a trace: which columns come from where.

    log = simulator.replay(trace, "dip-ca", "lru", "uniform", keep=0.5, dram_fraction=0.5, gamma=0.2)
    log.totals()     # hit rate, flash and DRAM bytes per token, per-group figures

Matrix groups (each with its own cache per layer):

* ``upgate`` -- column i of W_up and column i of W_gate, bundled (i indexes d_model; they share one
  mask, selected by |x|): 2 * d_ff weights per column;
* ``up`` and ``gate`` -- separately, when a gate keep different from up's is given (``keep_gate``);
  gate's mask is then top-k_gate of the same |x|;
* ``down`` -- column j of W_down (j indexes d_ff, selected by |GLU(x)|): d_model weights.

Per token the loop is: scores of all layers at once -> ``policy.select(scores, cache.resident, k)``
-> ``cache.step(mask)``, vectorized over layers and columns (no Python loop over columns). The
first ``warmup`` tokens are reported apart from the totals. ``dram_bytes`` counts bytes of cached
(hit) columns read from DRAM, ``flash_bytes`` bytes of missed columns read from flash -- the
paper's split; the engine adds the static weights and the KV cache.

The DRAM budget for the cache, a fraction of all MLP weights (``dram_fraction``) or bytes
(``dram_bytes``), is split over layers and groups by an allocation scheme (``simulator.allocation``)
and turned into columns through each group's bytes per column (trace metadata x bytes per weight,
or ``weight_format``: int4, int8, fp16, bf16, fp32, source, or a number of bytes).
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from traces.errors import DipsimError
from traces.format import Trace

from . import caches as caches_mod
from . import masking as masking_mod
from .registry import check_params

WEIGHT_FORMATS = {"int4": 0.5, "int8": 1.0, "fp8": 1.0, "fp16": 2.0, "bf16": 2.0, "fp32": 4.0}


def bytes_per_weight(trace_meta: dict[str, Any], weight_format: str | float | None) -> float:
    if weight_format in (None, "source"):
        return float(trace_meta["bytes_per_weight"])
    if isinstance(weight_format, (int, float)) and not isinstance(weight_format, bool):
        if weight_format <= 0:
            raise DipsimError(f"weight_format must be > 0 bytes per weight, got {weight_format}")
        return float(weight_format)
    try:
        return WEIGHT_FORMATS[str(weight_format)]
    except KeyError:
        raise DipsimError(f"unknown weight_format {weight_format!r}; allowed: source, "
                          f"{', '.join(WEIGHT_FORMATS)}, or bytes per weight as a number") from None


@dataclass(frozen=True)
class Group:
    name: str
    kind: str                 # "x" (scores |x|) or "h" (scores |GLU(x)|)
    n_columns: int
    bytes_per_column: float
    keep: tuple[float, ...]   # per layer
    pruned: bool              # False: every column every token

    def k(self) -> np.ndarray:
        return np.array([max(1, int(round(f * self.n_columns))) if f > 0 else 0 for f in self.keep], dtype=np.int64)


def _keep_vector(value: Any, L: int, what: str) -> tuple[float, ...]:
    arr = np.atleast_1d(np.asarray(value, dtype=float))
    if arr.size == 1:
        arr = np.full(L, float(arr[0]))
    if arr.shape != (L,):
        raise DipsimError(f"{what} must be a number or a list of {L} numbers (one per layer), got {arr.size} values")
    if not np.all((arr > 0) & (arr <= 1)):
        raise DipsimError(f"{what} must be in (0, 1], got {arr.tolist() if arr.size < 8 else arr.min()}")
    return tuple(float(v) for v in arr)


def make_groups(meta: dict[str, Any], policy: masking_mod.MaskingPolicy, *, keep: Any = 0.5,
                keep_up: Any = None, keep_gate: Any = None, keep_down: Any = None,
                weight_format: str | float | None = None) -> list[Group]:
    L, dm, dff = int(meta["n_layers"]), int(meta["d_model"]), int(meta["d_ff"])
    bpw = bytes_per_weight(meta, weight_format)
    k_up = _keep_vector(keep if keep_up is None else keep_up, L, "keep_up" if keep_up is not None else "keep")
    k_down = _keep_vector(keep if keep_down is None else keep_down, L, "keep_down" if keep_down is not None else "keep")
    up_pruned = "upgate" in policy.prunes
    dense = tuple([1.0] * L)
    groups = []
    if keep_gate is None:
        groups.append(Group("upgate", "x", dm, 2 * dff * bpw, k_up if up_pruned else dense, up_pruned))
    else:
        k_gate = _keep_vector(keep_gate, L, "keep_gate")
        groups.append(Group("up", "x", dm, dff * bpw, k_up if up_pruned else dense, up_pruned))
        groups.append(Group("gate", "x", dm, dff * bpw, k_gate if up_pruned else dense, up_pruned))
    down_pruned = "down" in policy.prunes
    groups.append(Group("down", "h", dff, dm * bpw, k_down if down_pruned else dense, down_pruned))
    return groups


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
        """Figures per token over the measured tokens (after warm-up), or ``part="warmup"`` / ``"all"``."""
        sl = self._span(part)
        n = max(len(range(*sl.indices(self.n_tokens))), 0)
        out: dict[str, Any] = {"tokens": n}
        sel_b = hit_b = miss_b = 0.0
        sel_c = hit_c = 0
        per = {}
        for g in self.groups.values():
            sel = g.selected[sl].astype(np.int64)
            hit = g.hits[sl].astype(np.int64)
            s, h = int(sel.sum()), int(hit.sum())
            per[g.name] = {
                "columns": g.n_columns,
                "bytes_per_column": g.bytes_per_column,
                "keep": float(sel.sum() / max(n * self.n_layers * g.n_columns, 1)),
                "capacity_columns": float(g.capacity.mean()),
                "selected_per_token": s / max(n, 1),
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
                  "groups": {n: {"n_columns": g.n_columns, "bytes_per_column": g.bytes_per_column}
                             for n, g in self.groups.items()}, "extra": self.extra}
        from traces.outputs import atomic

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
                  ("capacity", "k", "selected", "hits", "missed_bits"))) for n, g in header["groups"].items()}
        return cls(header["config"], header["trace_meta"], header["warmup"], groups, header["seconds"], header["extra"])


@dataclass(frozen=True)
class ReplaySetup:
    """Everything replay decided before the first token (also used by the closed loop)."""

    groups: list[Group]
    policies: dict[str, masking_mod.MaskingPolicy]
    capacities: dict[str, np.ndarray]
    cache_name: str
    cache_params: dict[str, Any]
    budget_bytes: float
    mlp_bytes: float


def _policy_params(masking: str | masking_mod.MaskingPolicy, params: dict[str, Any]) -> masking_mod.MaskingPolicy:
    if isinstance(masking, masking_mod.MaskingPolicy):
        if params:
            raise DipsimError("give masking parameters either in the policy object or as arguments, not both")
        return masking
    return masking_mod.make(masking, **params)


def prepare(meta: dict[str, Any], masking: str | masking_mod.MaskingPolicy = "dip", cache: str = "lru",
            allocation: str = "uniform", *, keep: Any = 0.5, keep_up: Any = None, keep_gate: Any = None,
            keep_down: Any = None, dram_fraction: float | None = None, dram_bytes: float | None = None,
            weight_format: str | float | None = None, masking_params: dict[str, Any] | None = None,
            cache_params: dict[str, Any] | None = None, calib: dict[str, np.ndarray] | None = None,
            allocation_params: dict[str, Any] | None = None) -> ReplaySetup:
    """Check every option and decide groups, keeps, calibrated policies and cache capacities."""
    from . import allocation as alloc_mod

    policy = _policy_params(masking, dict(masking_params or {}))
    cache_cls = caches_mod.REGISTRY.get_class(cache)
    cache_params = dict(cache_params or {})
    check_params("cache policy", cache, cache_params, [p for p in caches_mod.policy_params(cache) if p != "future"])
    if cache_cls.offline and policy.cache_aware:
        raise DipsimError(f"cache policy {cache!r} is an offline oracle: it needs the access sequence in advance, "
                          f"but {policy.name}'s choices depend on the cache; use it with cache-oblivious masking "
                          f"(dense, dip, glu-prune, threshold, static, random)")
    if not meta.get("has_h", True) and "down" in policy.prunes:
        raise DipsimError(f"masking {policy.name!r} prunes W_down by |GLU(x)|, but the trace holds no h; "
                          f"capture it without --no-h")
    groups = make_groups(meta, policy, keep=keep, keep_up=keep_up, keep_gate=keep_gate, keep_down=keep_down,
                         weight_format=weight_format)
    L = int(meta["n_layers"])
    mlp_bytes = float(sum(g.n_columns * g.bytes_per_column for g in groups) * L)
    if dram_fraction is not None and dram_bytes is not None:
        raise DipsimError("give the DRAM budget as dram_fraction or dram_bytes, not both")
    if dram_bytes is not None:
        if not dram_bytes >= 0:
            raise DipsimError(f"dram_bytes must be >= 0, got {dram_bytes}")
        budget = float(dram_bytes)
    else:
        frac = 0.5 if dram_fraction is None else dram_fraction
        if not 0.0 <= float(frac) <= 1.0:
            raise DipsimError(f"dram_fraction must be in [0, 1] (share of the MLP weights cached in DRAM), got {frac}")
        budget = float(frac) * mlp_bytes
    if cache == "none":
        budget = 0.0
    capacities = alloc_mod.allocate(allocation, groups, L, budget, calib=calib, **(allocation_params or {}))
    policies = {}
    for g in groups:
        if g.pruned and policy.needs_calibration:
            if calib is None or g.name not in calib:
                raise DipsimError(f"masking {policy.name!r} needs a calibration prefix")
            policies[g.name] = policy.calibrate(calib[g.name], g.k())
        else:
            policies[g.name] = policy
    return ReplaySetup(groups, policies, capacities, cache, cache_params, budget, mlp_bytes)


def calibration_scores(trace: Trace, groups: list[Group], tokens: int) -> dict[str, np.ndarray]:
    n = min(tokens, trace.n_tokens)
    blocks = {"x": trace.abs_block("x", 0, n)}
    if any(g.kind == "h" for g in groups) and trace.has_h:
        blocks["h"] = trace.abs_block("h", 0, n)
    return {g.name: blocks[g.kind] for g in groups if g.kind in blocks}


def replay(trace: Trace, masking: str | masking_mod.MaskingPolicy = "dip", cache: str = "lru",
           allocation: str = "uniform", *, keep: Any = 0.5, keep_up: Any = None, keep_gate: Any = None,
           keep_down: Any = None, dram_fraction: float | None = None, dram_bytes: float | None = None,
           weight_format: str | float | None = None, warmup: int = 16, calib_tokens: int = 64,
           tokens: int | None = None, cache_params: dict[str, Any] | None = None,
           allocation_params: dict[str, Any] | None = None, progress: bool = False, chunk: int = 64,
           threads: int | None = None, **masking_params: Any) -> AccessLog:
    """Replay ``masking`` with a ``cache`` per layer and group over ``trace``; see the module docstring.

    Extra keyword arguments are the masking policy's parameters (``gamma=0.2``, ``fixed_top_n=8``,
    ``seed=1``). Every option is checked before any work; errors are one line. ``threads`` splits
    the layers over that many threads (default: 2 for models whose columns per token make it pay,
    else 1); results do not depend on it.
    """
    t_start = time.perf_counter()
    T = trace.n_tokens if tokens is None else int(tokens)
    if not 0 < T <= trace.n_tokens:
        raise DipsimError(f"tokens must be in 1..{trace.n_tokens} (the trace's length), got {tokens}")
    if not 0 <= int(warmup) < T:
        raise DipsimError(f"warmup (--warmup) must be in 0..{T - 1} tokens for a {T}-token replay, got {warmup}; "
                          f"lower --warmup or replay more tokens")
    if int(calib_tokens) <= 0:
        raise DipsimError(f"calib_tokens must be > 0, got {calib_tokens}")
    policy = _policy_params(masking, masking_params)
    needs_calib = policy.needs_calibration or cache == "pinned" or allocation != "uniform"
    meta = dict(trace.meta)
    # groups first (cheap) so that calibration reads only what is needed
    groups0 = make_groups(meta, policy, keep=keep, keep_up=keep_up, keep_gate=keep_gate, keep_down=keep_down,
                          weight_format=weight_format) if needs_calib else []
    calib = calibration_scores(trace, groups0, calib_tokens) if needs_calib else None
    setup = prepare(meta, policy, cache, allocation, keep=keep, keep_up=keep_up, keep_gate=keep_gate,
                    keep_down=keep_down, dram_fraction=dram_fraction, dram_bytes=dram_bytes,
                    weight_format=weight_format, cache_params=cache_params, calib=calib,
                    allocation_params=allocation_params)
    L = trace.n_layers
    groups = setup.groups
    ks = {g.name: g.k() for g in groups}

    future = None
    if caches_mod.REGISTRY.get_class(cache).offline:
        future = {g.name: _all_masks(trace, g, setup.policies[g.name], ks[g.name], T, chunk) for g in groups}

    cache_objs = {}
    for g in groups:
        kw = dict(setup.cache_params)
        if future is not None:
            kw["future"] = future[g.name]
        c = caches_mod.make(cache, n_layers=L, n_columns=g.n_columns, capacity=setup.capacities[g.name], **kw)
        if calib is not None and g.name in calib:
            c.prime(calib[g.name].mean(axis=0))
        cache_objs[g.name] = c

    sel = {g.name: np.zeros((T, L), np.int32) for g in groups}
    hit = {g.name: np.zeros((T, L), np.int32) for g in groups}
    bits = {g.name: np.zeros((T, L, (g.n_columns + 7) // 8), np.uint8) for g in groups}
    kinds = sorted({g.kind for g in groups if g.pruned}) if future is None else []
    shards = _shards(L, threads, sum(g.n_columns for g in groups) * L)
    row_policies = {g.name: [setup.policies[g.name].rows(l0, l1) for l0, l1 in shards] for g in groups}
    masks = {g.name: np.ones((L, g.n_columns), dtype=bool) for g in groups}   # dense groups stay all-True
    hits = {g.name: np.zeros((L, g.n_columns), dtype=bool) for g in groups}
    counts = {g.name: (np.zeros(L, np.int64), np.zeros(L, np.int64)) for g in groups}

    def run_rows(w: int, t: int, block: dict[str, np.ndarray] | None) -> None:
        l0, l1 = shards[w]
        for g in groups:
            c = cache_objs[g.name]
            mask = masks[g.name]
            if future is not None:  # an offline cache replays exactly the masks it was given
                mask[l0:l1] = future[g.name][t, l0:l1]
            elif g.pruned:
                mask[l0:l1] = row_policies[g.name][w].select(block[g.kind][l0:l1], c.resident[l0:l1],
                                                             ks[g.name][l0:l1])
            h = hits[g.name]
            c.step_rows(mask, h, *counts[g.name], l0, l1, w)
            bits[g.name][t, l0:l1] = np.packbits(mask[l0:l1] & ~h[l0:l1], axis=1)

    bar = _bar(T, progress, f"replay {policy.name}+{cache}")
    pool = ThreadPoolExecutor(len(shards) - 1) if len(shards) > 1 else None
    try:
        for t0 in range(0, T, chunk):
            t1 = min(t0 + chunk, T)
            blocks = {kind: trace.abs_block(kind, t0, t1) for kind in kinds}
            for t in range(t0, t1):
                block = {kind: b[t - t0] for kind, b in blocks.items()}
                if pool is None:
                    run_rows(0, t, block)
                else:
                    done = [pool.submit(run_rows, w, t, block) for w in range(1, len(shards))]
                    run_rows(0, t, block)
                    for f in done:
                        f.result()
                for g in groups:
                    s_cnt, h_cnt = counts[g.name]
                    cache_objs[g.name].finish_step(s_cnt, h_cnt)
                    sel[g.name][t] = s_cnt
                    hit[g.name][t] = h_cnt
            bar.update(t1 - t0)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
    logs = {g.name: GroupLog(g.name, g.n_columns, g.bytes_per_column, setup.capacities[g.name], ks[g.name],
                             sel[g.name], hit[g.name], bits[g.name]) for g in groups}
    config = {"masking": policy.name, **{f"masking.{k}": v for k, v in policy.params().items()},
              "cache": cache, **{f"cache.{k}": v for k, v in setup.cache_params.items()},
              "allocation": allocation, "keep": keep, "keep_up": keep_up, "keep_gate": keep_gate,
              "keep_down": keep_down, "dram_fraction": dram_fraction if dram_bytes is None else None,
              "dram_bytes": setup.budget_bytes, "weight_format": weight_format or "source",
              "bytes_per_weight": bytes_per_weight(meta, weight_format), "warmup": warmup,
              "calib_tokens": calib_tokens if needs_calib else None, "tokens": T}
    return AccessLog(config, meta, int(warmup), logs, time.perf_counter() - t_start,
                     {"mlp_bytes": setup.mlp_bytes})


def _shards(L: int, threads: int | None, columns_per_token: int) -> list[tuple[int, int]]:
    """Contiguous layer ranges, one per worker thread."""
    if threads is None:
        threads = min(2, os.cpu_count() or 1) if columns_per_token >= 200_000 else 1
    threads = max(1, min(int(threads), L))
    bounds = np.linspace(0, L, threads + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _all_masks(trace: Trace, g: Group, policy, k, T: int, chunk: int) -> np.ndarray:
    """The masks of a cache-oblivious policy for every token (what an offline cache oracle needs)."""
    L = trace.n_layers
    out = np.ones((T, L, g.n_columns), dtype=bool)
    if not g.pruned:
        return out
    no_cache = np.zeros((L, g.n_columns), dtype=bool)
    for t0 in range(0, T, chunk):
        t1 = min(t0 + chunk, T)
        block = trace.abs_block(g.kind, t0, t1)
        for t in range(t0, t1):
            out[t] = policy.select(block[t - t0], no_cache, k)
    return out


def _bar(total: int, enabled: bool, desc: str):
    import sys

    from tqdm import tqdm

    return tqdm(total=total, unit="tok", desc=desc, disable=not enabled, file=sys.stderr, dynamic_ncols=True,
                leave=False)

