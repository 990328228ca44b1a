"""Accuracy in the loop: run the real model with the masking and cache policies inside its forward.

    from simulator.accuracy import evaluate
    rows = evaluate("smollm2-135m", [{"masking": "dip-ca", "gamma": 0.2, "keep": 0.5, "cache": "lru",
                                      "dram_fraction": 0.5}], tokens=1024)
    rows[0]["perplexity"], rows[0]["kl_to_dense"], rows[0]["hit_rate"], rows[0]["open_loop_hit_rate"]

Open loop (``simulator.replay``) replays masks chosen on the *dense* model's activations. In the
closed loop the masked model runs: the masks of one layer change the activations of every later
layer and token, and with cache-aware masking (DIP-CA) the cache state changes the masks. This
module runs that loop with the very objects replay uses -- ``simulator.replay.prepare`` decides the
groups, keeps, calibrated policies and cache capacities exactly as replay does.

Per gated MLP of every decoder layer and per token (forward hooks, as in ``traces.capture``):

* up/gate group(s): ``scores = |x|`` of the MLP input, ``m = policy.select(scores, resident, k)``
  for that one layer, and the MLP computes with ``x * m`` (zeroed input columns of W_up/W_gate).
  With a separate gate keep (``keep_gate``: groups ``up`` and ``gate``) the masks are applied to the
  inputs of ``up_proj`` / ``gate_proj`` (Phi-3's fused ``gate_up_proj``: each half computed from its
  own masked input);
* down group: ``scores = |h|`` of this row's GLU output (computed from the masked x), and W_down
  sees ``h * m``.

Residency used for token t is the cache state after token t-1: every (config, group) has one cache
object over all L layers, layer l selects with ``cache.resident[l:l+1]``, and once the whole token
has run the cache steps once with the token's full ``[L, N]`` mask (hits counted before insertions,
as in replay). Groups a policy does not prune (all groups for ``dense``, up/gate for ``glu-prune``)
use every column and still step their cache with all-True masks, as in replay.

Several configurations run in ONE forward pass: the batch dimension holds them, all over the same
token sequence (identical lengths, no padding, explicit position ids, so no attention mask is
needed). Row 0 is always the dense model: the reference for KL and top-1, and the row of every
configuration whose masking prunes nothing (``dense``: its forward does not depend on the cache).
By default the linear layers run row by row while decoding (``batch_invariant=True``): a batched
GEMM chooses its blocking by batch size, so a row's last bits would depend on how many other
configurations share the batch, and a top-k choice turns a last-bit difference into a different
trajectory (a few percent of perplexity over 48 tokens for dip-ca). Row by row, every
configuration's numbers are bit for bit those of running it alone, whatever the batch; this costs
about 1.6x the batched GEMM time (SmolLM2 forward on 2 cores: ~100 vs ~60 ms per token at 2
rows, ~200 vs ~125 ms at 9 rows; ``batch_invariant=False`` / ``--batched-gemm`` for speed).
Decoding is memory-bound, so 9 rows cost about twice the time of 2 rows.

Tokens and metrics (the convention of ``traces.capture``): the sequence is BOS (when the tokenizer
has one) followed by the first ``tokens`` text tokens of the corpus, in one context window. The
first ``n_pre = [BOS] + prefill`` positions run densely in one parallel forward (the prompt); the
rest run one token at a time with the KV cache, masked, and step the caches ("decode"). Scored are
the next-token predictions of the text tokens after the prefill, each from its full prefix:
``tokens - prefill`` of them with a BOS, so with ``prefill = 0`` perplexity is exactly the model's
loss-based perplexity ``model(input_ids=[BOS] + text, labels=...)`` for the dense row. The first
scored token is predicted from the last prefill position (BOS by default), which is dense for every
configuration; the prefill tokens themselves count in no metric. The forward of the last text token
only serves the cache (its prediction lies beyond the text). Metrics:

* ``perplexity``: exp(mean NLL of the scored tokens); ``kl_to_dense``: mean KL(dense || config) of
  the next-token distributions; ``top1_agreement``: share of positions where the arg-max matches;
* ``hit_rate`` (by bytes, across groups) and ``flash_bytes_per_token`` of the closed loop, from an
  ``AccessLog`` built like replay's, over the decode tokens after ``warmup``;
* ``open_loop_hit_rate`` / ``open_loop_flash_bytes_per_token``: ``simulator.replay`` of the dense
  trace of the same tokens (x and h recorded by a parallel dense forward of the same sequence,
  float32, decode positions only) with the same configuration and warm-up.

Policies that need calibration (``threshold``, ``static``; the ``pinned`` cache; a non-uniform
allocation) calibrate on the first ``calib_tokens`` tokens of that dense trace, as replay does.
Offline cache policies (``belady``) cannot run here and are refused.

Results are cached on disk under ``traces.models.cache_root() / "accuracy"``, one JSON file per
(model, corpus digest, tokens, prefill, warm-up, calibration, configuration), written atomically.
torch is imported only inside functions.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from traces.errors import DipsimError

SCHEMA = 1
#: configuration keys besides the masking policy's own parameters (gamma, fixed_top_n, seed, ...)
CONFIG_KEYS = ("masking", "keep", "keep_up", "keep_gate", "keep_down", "cache", "cache_params", "allocation",
               "allocation_params", "dram_fraction", "dram_bytes", "weight_format", "label")
DEFAULT_CONFIG = {"masking": "dip-ca", "gamma": 0.2, "keep": 0.5, "cache": "lru", "dram_fraction": 0.5,
                  "allocation": "uniform"}
#: metrics every result row holds (besides the configuration)
METRICS = ("perplexity", "kl_to_dense", "top1_agreement", "hit_rate", "flash_bytes_per_token", "open_loop_hit_rate",
           "open_loop_flash_bytes_per_token", "tokens")


# --------------------------------------------------------------------------- configurations
def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return v.item()
    return v


def _check_keep(value: Any, what: str, where: str) -> Any:
    if value is None:
        return None
    try:
        arr = np.atleast_1d(np.asarray(value, dtype=float))
    except (TypeError, ValueError):
        raise DipsimError(f"{where}: {what} must be a number in (0, 1] or a list of them, got {value!r}") from None
    if arr.ndim != 1 or arr.size == 0 or not np.all((arr > 0) & (arr <= 1)):
        raise DipsimError(f"{where}: {what} must be in (0, 1], got {value!r}")
    return float(arr[0]) if np.ndim(value) == 0 else [float(v) for v in arr]


def normalize_config(cfg: Any, where: str = "config") -> dict[str, Any]:
    """Check one configuration without touching a model; return it with every default filled in.

    Keys: ``masking`` (default dip), the masking policy's parameters (``gamma``, ``fixed_top_n``,
    ``seed``), ``keep`` / ``keep_up`` / ``keep_gate`` / ``keep_down``, ``cache`` (default lru),
    ``cache_params``, ``allocation`` (default uniform), ``allocation_params``, ``dram_fraction``
    (default 0.5) or ``dram_bytes``, ``weight_format``, ``label``.
    """
    from . import allocation as alloc_mod
    from . import caches as caches_mod
    from . import masking as masking_mod
    from .masking.base import policy_params
    from .registry import check_params
    from .replay import bytes_per_weight

    if not isinstance(cfg, dict):
        raise DipsimError(f"{where}: a configuration is a mapping like {{'masking': 'dip-ca', 'gamma': 0.2}}, "
                          f"got {type(cfg).__name__}")
    cfg = dict(cfg)
    name = cfg.pop("masking", "dip")
    try:
        cls = masking_mod.REGISTRY.get_class(name)
        cache = cfg.get("cache", "lru")
        cache_cls = caches_mod.REGISTRY.get_class(cache)
    except DipsimError as e:
        raise DipsimError(f"{where}: {e}") from None
    mfields = policy_params(cls)
    unknown = sorted(k for k in cfg if k not in CONFIG_KEYS and k not in mfields)
    if unknown:
        raise DipsimError(f"{where}: unknown key {unknown[0]!r} for masking {name!r}; allowed: "
                          f"{', '.join(list(CONFIG_KEYS) + mfields)}")
    mparams = {k: cfg.pop(k) for k in mfields if k in cfg}
    try:
        policy = masking_mod.make(name, **mparams)
    except DipsimError as e:
        raise DipsimError(f"{where}: {e}") from None
    if cache_cls.offline:
        raise DipsimError(f"{cache} needs the future; it cannot run in the closed loop "
                          f"(use it in open-loop replay with cache-oblivious masking)")
    cache_params = dict(cfg.get("cache_params") or {})
    try:
        check_params("cache policy", cache, cache_params, [p for p in caches_mod.policy_params(cache) if p != "future"])
    except DipsimError as e:
        raise DipsimError(f"{where}: {e}") from None
    allocation = cfg.get("allocation", "uniform")
    if allocation not in alloc_mod.SCHEMES:
        raise DipsimError(f"{where}: unknown allocation {allocation!r}; allowed: {', '.join(alloc_mod.SCHEMES)}")
    frac, nbytes = cfg.get("dram_fraction"), cfg.get("dram_bytes")
    if frac is not None and nbytes is not None:
        raise DipsimError(f"{where}: give the DRAM budget as dram_fraction or dram_bytes, not both")
    if nbytes is None:
        frac = 0.5 if frac is None else frac
        try:
            frac = float(frac)
        except (TypeError, ValueError):
            raise DipsimError(f"{where}: dram_fraction must be a number in [0, 1], got {frac!r}") from None
        if not 0.0 <= frac <= 1.0:
            raise DipsimError(f"{where}: dram_fraction must be in [0, 1] (share of the MLP weights cached in DRAM), "
                              f"got {frac}")
    else:
        try:
            nbytes = float(nbytes)
        except (TypeError, ValueError):
            raise DipsimError(f"{where}: dram_bytes must be a number of bytes, got {nbytes!r}") from None
        if not nbytes >= 0:
            raise DipsimError(f"{where}: dram_bytes must be >= 0, got {nbytes}")
    wf = cfg.get("weight_format")
    try:
        bytes_per_weight({"bytes_per_weight": 1.0}, wf)
    except DipsimError as e:
        raise DipsimError(f"{where}: {e}") from None
    out: dict[str, Any] = {"masking": name, **_jsonable(policy.params())}
    for k in ("keep", "keep_up", "keep_gate", "keep_down"):
        value = cfg.get(k)
        default = 1.0 if name == "dense" else 0.5          # dense keeps every column whatever keep says
        out[k] = _check_keep(default if k == "keep" and value is None else value, k, where)
    out.update(cache=cache, cache_params=_jsonable(cache_params), allocation=allocation,
               allocation_params=_jsonable(dict(cfg.get("allocation_params") or {})),
               dram_fraction=frac, dram_bytes=nbytes, weight_format=wf if wf is not None else "source")
    out["label"] = str(cfg["label"]) if cfg.get("label") is not None else config_label(out)
    return out


def config_label(cfg: dict[str, Any]) -> str:
    """A short readable name: ``dip-ca(gamma=0.2) keep=0.5 lru dram=0.5``."""
    from . import masking as masking_mod
    from .masking.base import policy_params

    name = cfg["masking"]
    cls = masking_mod.REGISTRY.get_class(name)
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.name in policy_params(cls)}
    shown = {k: cfg[k] for k in defaults if k in cfg and (k == "gamma" or cfg[k] != defaults[k])}
    text = name + ("(" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")" if shown else "")
    if cls.prunes:
        keeps = [f"{k}={cfg[k]}" for k in ("keep", "keep_up", "keep_gate", "keep_down") if cfg.get(k) is not None]
        text += " " + " ".join(keeps)
    text += f" {cfg['cache']}"
    if cfg["cache"] != "none":
        text += f" dram={cfg['dram_fraction']}" if cfg.get("dram_bytes") is None else f" dram={cfg['dram_bytes']:.4g}B"
    if cfg["allocation"] != "uniform":
        text += f" {cfg['allocation']}"
    if cfg.get("weight_format", "source") != "source":
        text += f" {cfg['weight_format']}"
    return text


def _replay_kwargs(cfg: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(masking policy object, the keyword arguments replay/prepare take) of a normalized config."""
    from . import masking as masking_mod

    from .masking.base import policy_params

    mparams = {k: cfg[k] for k in policy_params(masking_mod.REGISTRY.get_class(cfg["masking"])) if k in cfg}
    if "thresholds" in mparams and mparams["thresholds"] is not None:
        mparams["thresholds"] = tuple(mparams["thresholds"])
    policy = masking_mod.make(cfg["masking"], **mparams)
    kw = {k: cfg[k] for k in ("keep", "keep_up", "keep_gate", "keep_down", "dram_fraction", "dram_bytes")}
    kw["weight_format"] = None if cfg["weight_format"] == "source" else cfg["weight_format"]
    kw["cache_params"] = dict(cfg["cache_params"])
    kw["allocation_params"] = dict(cfg["allocation_params"])
    return policy, kw


# --------------------------------------------------------------------------- disk cache of results
def results_dir() -> Path:
    from traces.models import cache_root

    return cache_root() / "accuracy"


def _model_key(source) -> str:
    from traces.models import _file_key

    p = Path(source.path)
    if p.is_file():
        return f"{source.name}|{_file_key(p)}"
    h = hashlib.sha256()
    for f in sorted(p.iterdir()):
        if f.is_file() and (f.suffix in (".json", ".safetensors", ".bin", ".model", ".gguf")):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return f"{source.name}|{h.hexdigest()[:16]}"


def _result_key(model_key: str, corpus_digest: str, run: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    from traces import __version__

    c = {k: v for k, v in cfg.items() if k != "label"}
    return {"schema": SCHEMA, "dipsim": __version__, "model": model_key, "corpus_digest": corpus_digest, **run,
            "config": c}


def _key_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return results_dir() / f"{digest}.json"


def _read_cached(key: dict[str, Any]) -> dict[str, Any] | None:
    p = _key_path(key)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    if data.get("key") != json.loads(json.dumps(key)):
        return None
    return data.get("result")


def _write_cached(key: dict[str, Any], result: dict[str, Any]) -> None:
    p = _key_path(key)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "result": result}, indent=1, sort_keys=True))
        os.replace(tmp, p)
    except OSError as e:  # a cache that cannot be written only costs time
        print(f"dipsim: warning: could not cache an accuracy result in {p.parent}: {e}", file=sys.stderr)


# --------------------------------------------------------------------------- one configuration in the loop
class _ConfigRun:
    """The masking/cache state of one configuration in the closed loop, and its access log."""

    def __init__(self, cfg: dict[str, Any], setup, meta: dict[str, Any], n_tokens: int, row: int,
                 calib: dict[str, np.ndarray] | None):
        from . import caches as caches_mod

        self.cfg, self.setup, self.meta, self.row = cfg, setup, meta, row
        L = int(meta["n_layers"])
        self.L, self.T = L, n_tokens
        self.groups = setup.groups
        self.ks = {g.name: g.k() for g in self.groups}
        # per layer, the policy for that one layer (random's per-layer generators, calibrated slices)
        self.row_policies = {g.name: [setup.policies[g.name].rows(layer, layer + 1) for layer in range(L)]
                             for g in self.groups if g.pruned}
        self.caches = {}
        for g in self.groups:
            c = caches_mod.make(setup.cache_name, n_layers=L, n_columns=g.n_columns,
                                capacity=setup.capacities[g.name], **setup.cache_params)
            if calib is not None and g.name in calib:
                c.prime(calib[g.name].mean(axis=0))
            self.caches[g.name] = c
        self.masks = {g.name: np.ones((L, g.n_columns), dtype=bool) for g in self.groups}
        self.x_groups = [g for g in self.groups if g.kind == "x" and g.pruned]
        self.h_groups = [g for g in self.groups if g.kind == "h" and g.pruned]
        self.split = any(g.name in ("up", "gate") for g in self.groups)
        self.sel = {g.name: np.zeros((n_tokens, L), np.int32) for g in self.groups}
        self.hit = {g.name: np.zeros((n_tokens, L), np.int32) for g in self.groups}
        self.bits = {g.name: np.zeros((n_tokens, L, (g.n_columns + 7) // 8), np.uint8) for g in self.groups}

    def select(self, group, layer: int, scores: np.ndarray) -> np.ndarray:
        """Mask row of ``group`` in ``layer`` from this row's scores ``[N]``; kept for the cache step."""
        name = group.name
        m = self.row_policies[name][layer].select(scores[None], self.caches[name].resident[layer:layer + 1],
                                                  self.ks[name][layer:layer + 1])
        self.masks[name][layer] = m[0]
        return m[0]

    def end_token(self, t: int) -> None:
        for g in self.groups:
            mask = self.masks[g.name]
            hits = self.caches[g.name].step(mask)
            self.sel[g.name][t] = np.count_nonzero(mask, axis=1)
            self.hit[g.name][t] = np.count_nonzero(hits, axis=1)
            self.bits[g.name][t] = np.packbits(mask & ~hits, axis=1)

    def access_log(self, warmup: int, seconds: float):
        from .replay import AccessLog, GroupLog

        logs = {g.name: GroupLog(g.name, g.n_columns, g.bytes_per_column, self.setup.capacities[g.name],
                                 self.ks[g.name], self.sel[g.name], self.hit[g.name], self.bits[g.name])
                for g in self.groups}
        return AccessLog(dict(self.cfg), self.meta, warmup, logs, seconds, {"mlp_bytes": self.setup.mlp_bytes})


# --------------------------------------------------------------------------- model plumbing
def _first_arg(args, kwargs):
    return args[0] if args else next(iter(kwargs.values()))


def _replace_first(args, kwargs, value):
    if args:
        return (value,) + tuple(args[1:]), kwargs
    k = next(iter(kwargs))
    kwargs = dict(kwargs)
    kwargs[k] = value
    return args, kwargs


_BIG_LINEAR = 16 << 20     # bytes of weights above which a linear layer is processed in blocks
_BLOCK_BYTES = 1 << 20


def _rowwise_linear(x, weight, bias):
    """``F.linear`` one row at a time (``torch.mv`` on a fresh copy of each row): every row's result
    is then a function of that row alone, bit for bit, whatever the batch around it. A batched GEMM
    picks its blocking from the batch size, so a row's rounding would depend on how many other
    configurations share the batch -- and a top-k choice amplifies a last-bit difference into a
    different trajectory."""
    import torch

    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    n_out, n_in = weight.shape
    out = torch.empty((x2.shape[0], n_out), dtype=x.dtype)
    rows = [x2[r].clone() for r in range(x2.shape[0])]
    if n_out * n_in * weight.element_size() <= _BIG_LINEAR:
        for r, xr in enumerate(rows):
            torch.mv(weight, xr, out=out[r])
    else:  # an LM head: blocks of ~1 MB of weights stay in L2 while every row passes over them
        step = max(1, _BLOCK_BYTES // (n_in * weight.element_size()))
        for c in range(0, n_out, step):
            w = weight[c:c + step]
            for r, xr in enumerate(rows):
                torch.mv(w, xr, out=out[r, c:c + step])
    if bias is not None:
        out += bias
    return out.reshape(*shape[:-1], weight.shape[0])


class _RowwiseLinears:
    """Context: every ``nn.Linear`` of ``model`` computes row by row (see :func:`_rowwise_linear`)."""

    def __init__(self, model, enabled: bool = True):
        self.model, self.enabled, self.saved = model, enabled, []

    def __enter__(self):
        import torch

        if not self.enabled:
            return self
        for mod in self.model.modules():
            if isinstance(mod, torch.nn.Linear):
                self.saved.append((mod, mod.__dict__.get("forward")))
                mod.forward = (lambda m: lambda x: _rowwise_linear(x, m.weight, m.bias))(mod)
        return self

    def __exit__(self, *exc):
        for mod, fwd in self.saved:
            if fwd is None:
                del mod.forward
            else:
                mod.forward = fwd
        self.saved = []


def _cache_kwarg(model) -> str:
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _out_cache(out):
    c = getattr(out, "cache", None)
    return c if c is not None else getattr(out, "past_key_values", None)


def dense_trace(lm, seq: list[int], n_pre: int, meta: dict[str, Any]):
    """x and h of every layer at positions ``n_pre:`` of one parallel dense forward of ``seq``,
    as an in-memory float32 :class:`traces.Trace` (what ``traces.capture`` records, one window)."""
    import torch

    from traces.format import Trace

    L, T = lm.info.n_layers, len(seq) - n_pre
    xs = np.empty((L, T, lm.info.d_model), np.float32)
    hs = np.empty((L, T, lm.info.d_ff), np.float32)
    handles = []

    def put(buf, i):
        def hook(mod, args, kwargs):
            buf[i] = _first_arg(args, kwargs)[0, n_pre:].float().numpy()
        return hook

    for i, mlp in enumerate(lm.mlps):
        handles.append(mlp.register_forward_pre_hook(put(xs, i), with_kwargs=True))
        handles.append(mlp.down_proj.register_forward_pre_hook(put(hs, i), with_kwargs=True))
    base = getattr(lm.model, getattr(lm.model, "base_model_prefix", ""), None) or lm.model  # no LM head
    try:
        with torch.inference_mode():
            base(input_ids=torch.tensor([seq]), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return Trace.from_arrays(xs, hs, meta)


@dataclass
class LoopResult:
    """Per row of the batch and per scored position: NLL, KL to row 0, top-1 agreement with row 0."""

    nll: np.ndarray          # [rows, scored] float64
    kl: np.ndarray           # [rows, scored] float64
    top1: np.ndarray         # [rows, scored] bool
    seconds: float
    logits: np.ndarray | None = None   # [scored, rows, vocab] float32 when asked for
    extra: dict[str, Any] = field(default_factory=dict)


def closed_loop(lm, seq: list[int], runs: list[_ConfigRun], n_rows: int, n_pre: int, *, progress: bool = False,
                details: bool = False, batch_invariant: bool = True) -> LoopResult:
    """Run ``seq`` through the model with ``n_rows`` batch rows (row 0 dense), masking each row by the
    configurations in ``runs`` and stepping their caches once per decode token; see the module doc.

    With ``details`` the result also holds every row's logits of the scored positions and, in
    ``extra["x"]`` / ``extra["h"]`` (``[rows, L, T, N]``), the activations each row's policy scored:
    the MLP input before its mask and the GLU output before its mask. ``batch_invariant``: decode
    with row-by-row linear layers, so that each row's numbers do not depend on the batch (see
    :func:`_rowwise_linear`); False uses the batched GEMMs (faster, but a configuration's result
    then depends on the other rows at the level of float rounding, amplified by top-k choices).
    """
    import torch

    L, dm, dff = lm.info.n_layers, lm.info.d_model, lm.info.d_ff
    B = n_rows
    masked_rows = [r for r in runs if r.row > 0]
    split = any(r.split for r in masked_rows)
    state = {"active": False, "t": 0}
    T = len(seq) - n_pre
    rec_x = np.zeros((B, L, T, dm), np.float32) if details else None
    rec_h = np.zeros((B, L, T, dff), np.float32) if details else None
    # float masks per layer, rows of unmasked configurations stay 1.0
    m_up = [np.ones((B, dm), np.float32) for _ in range(L)]
    m_gate = [np.ones((B, dm), np.float32) for _ in range(L)] if split else m_up
    m_down = [np.ones((B, dff), np.float32) for _ in range(L)]
    x_runs = [r for r in masked_rows if r.x_groups]
    h_runs = [r for r in masked_rows if r.h_groups]
    t_select = [0.0]

    def record_and_select(i, a, rec, runs, assign) -> bool:
        """Record the last position's activations ``a`` (when asked) and let every masked row
        choose its columns from their magnitudes; False when no row masks here."""
        if rec is not None:
            rec[:, i, state["t"]] = a[:, -1, :].numpy()
        if not runs:
            return False
        t0 = time.perf_counter()
        scores = a[:, -1, :].abs().numpy()
        for r in runs:
            assign(r, scores[r.row])
        t_select[0] += time.perf_counter() - t0
        return True

    def mlp_hook(i):
        def assign(r, scores):
            for g in r.x_groups:
                m = r.select(g, i, scores)
                if g.name in ("upgate", "up"):
                    m_up[i][r.row] = m
                if g.name in ("upgate", "gate"):
                    m_gate[i][r.row] = m

        def hook(mod, args, kwargs):
            if not state["active"]:
                return None
            x = _first_arg(args, kwargs)
            if not record_and_select(i, x, rec_x, x_runs, assign) or split:
                return None  # nothing masked here, or the projection hooks apply the two masks
            return _replace_first(args, kwargs, x * torch.from_numpy(m_up[i])[:, None, :])
        return hook

    def proj_pre_hook(i, masks):
        def hook(mod, args, kwargs):
            if not state["active"]:
                return None
            x = _first_arg(args, kwargs)
            return _replace_first(args, kwargs, x * torch.from_numpy(masks[i])[:, None, :])
        return hook

    def fused_hook(i):
        # Phi-3 with separate up and gate masks: the fused projection's output is recomputed from
        # the two masked inputs (its own forward ran on the unmasked x; simple, at twice the cost)
        def hook(mod, args, kwargs, out):
            if not state["active"]:
                return None
            x = _first_arg(args, kwargs)
            w, b = mod.weight, mod.bias
            lin = _rowwise_linear if batch_invariant else torch.nn.functional.linear
            gate = lin(x * torch.from_numpy(m_gate[i])[:, None, :], w[:dff], None if b is None else b[:dff])
            up = lin(x * torch.from_numpy(m_up[i])[:, None, :], w[dff:], None if b is None else b[dff:])
            return torch.cat([gate, up], dim=-1)   # Phi-3: gate first, then up (chunk(2) order)
        return hook

    def down_hook(i):
        def assign(r, scores):
            for g in r.h_groups:
                m_down[i][r.row] = r.select(g, i, scores)

        def hook(mod, args, kwargs):
            if not state["active"]:
                return None
            h = _first_arg(args, kwargs)
            if not record_and_select(i, h, rec_h, h_runs, assign):
                return None
            return _replace_first(args, kwargs, h * torch.from_numpy(m_down[i])[:, None, :])
        return hook

    handles = []
    try:
        for i, mlp in enumerate(lm.mlps):
            handles.append(mlp.register_forward_pre_hook(mlp_hook(i), with_kwargs=True))
            handles.append(mlp.down_proj.register_forward_pre_hook(down_hook(i), with_kwargs=True))
            if split:
                if hasattr(mlp, "gate_up_proj"):
                    handles.append(mlp.gate_up_proj.register_forward_hook(fused_hook(i), with_kwargs=True))
                else:
                    handles.append(mlp.up_proj.register_forward_pre_hook(proj_pre_hook(i, m_up), with_kwargs=True))
                    handles.append(mlp.gate_proj.register_forward_pre_hook(proj_pre_hook(i, m_gate),
                                                                           with_kwargs=True))
        res = _run(lm, seq, runs, B, n_pre, state, t_select, progress, details, batch_invariant)
    finally:
        for h in handles:
            h.remove()
    if details:
        res.extra.update(x=rec_x, h=rec_h)
    return res


def _run(lm, seq, runs, B, n_pre, state, t_select, progress, details, batch_invariant) -> LoopResult:
    import torch

    from .replay import progress_bar as _bar

    n = len(seq)
    model = lm.model
    ckw = _cache_kwarg(model)
    first_target = max(n_pre, 1)
    n_scored = n - first_target
    nll = np.zeros((B, n_scored))
    kl = np.zeros((B, n_scored))
    top1 = np.zeros((B, n_scored), dtype=bool)
    logits_keep = np.zeros((n_scored, B, lm.info.vocab_size), np.float32) if details else None
    seq_t = torch.tensor(seq)

    def score(logits, target_pos: int) -> None:
        j = target_pos - first_target
        if not 0 <= j < n_scored:
            return
        lg = logits[:, -1, :]
        if details:
            logits_keep[j] = lg.float().numpy()
        # row by row (float64), so that a row's figures do not depend on the batch either
        lp = [torch.log_softmax(lg[b].double(), dim=-1) for b in range(lg.shape[0])]
        p0 = lp[0].exp()
        top0 = int(lg[0].argmax())
        for b, lpb in enumerate(lp):
            nll[b, j] = -float(lpb[seq[target_pos]])
            kl[b, j] = float((p0 * (lp[0] - lpb)).sum())
            top1[b, j] = int(lg[b].argmax()) == top0

    t0 = time.perf_counter()
    cache = None
    bar = _bar(n - n_pre, progress, f"eval {B} row{'s' if B > 1 else ''}")
    try:
        with torch.inference_mode():
            if n_pre:  # the dense prompt: batch 1 (the same computation for any batch), then B copies
                out = model(input_ids=seq_t[None, :n_pre], use_cache=True, logits_to_keep=1)
                cache = _out_cache(out)
                if B > 1:
                    cache.batch_repeat_interleave(B)
                score(out.logits.expand(B, -1, -1), n_pre)
            state["active"] = True
            with _RowwiseLinears(model, batch_invariant):
                for pos in range(n_pre, n):
                    state["t"] = pos - n_pre
                    ids = seq_t[pos].expand(B, 1)
                    pids = torch.full((B, 1), pos, dtype=torch.long)
                    out = model(input_ids=ids, position_ids=pids, use_cache=True, logits_to_keep=1, **{ckw: cache})
                    cache = _out_cache(out)
                    for r in runs:
                        r.end_token(pos - n_pre)
                    score(out.logits, pos + 1)
                    bar.update(1)
    finally:
        state["active"] = False
        bar.close()
    return LoopResult(nll, kl, top1, time.perf_counter() - t0, logits_keep, {"select_seconds": t_select[0]})


# --------------------------------------------------------------------------- public entry point
def _check_run_args(tokens: Any, prefill: Any, warmup: Any, calib_tokens: Any) -> tuple[int, int, int, int]:
    def as_int(v, what):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise DipsimError(f"{what} must be an integer, got {v!r}")
        return int(v)

    tokens, prefill = as_int(tokens, "tokens"), as_int(prefill, "prefill")
    warmup, calib_tokens = as_int(warmup, "warmup"), as_int(calib_tokens, "calib_tokens")
    if tokens < 2:
        raise DipsimError(f"tokens must be >= 2, got {tokens}")
    if not 0 <= prefill <= tokens - 2:
        raise DipsimError(f"prefill must be in 0..{tokens - 2} (tokens - 2), got {prefill}")
    if not 0 <= warmup < tokens - prefill:
        raise DipsimError(f"warmup must be in 0..{tokens - prefill - 1} (the decoded tokens minus one), got {warmup}")
    if calib_tokens <= 0:
        raise DipsimError(f"calib_tokens must be > 0, got {calib_tokens}")
    return tokens, prefill, warmup, calib_tokens


def evaluate(model: Any, configs: list[dict[str, Any]] | dict[str, Any], *, text: str | os.PathLike | None = None,
             dataset: str | os.PathLike | None = None, text_column: str = "text", tokens: int = 1024,
             prefill: int = 0, warmup: int = 16, calib_tokens: int = 64, reuse: bool = True,
             progress: bool = False, details: bool = False, batch_invariant: bool = True) -> list[dict[str, Any]]:
    """Closed-loop accuracy and cache figures of each configuration, in one batched run.

    ``model``: a name or path for :func:`traces.models.load_model`, or a ``LoadedModel``.
    ``configs``: one configuration or a list (see :func:`normalize_config`); each gets a row of
    the batch (``dense`` ones share the dense reference row). ``text`` / ``dataset``: the corpus
    (default: the offline default corpus). ``tokens``: text tokens after BOS; ``prefill``: leading
    text tokens run densely and left out of every metric; ``warmup``: decode tokens left out of the
    hit rates (as in replay); ``calib_tokens``: dense-trace prefix for calibrated policies.
    ``reuse``: read and write the on-disk result cache (False: neither). ``batch_invariant``
    (default): linear layers run row by row while decoding, so each configuration's numbers are
    bit for bit those of running it alone; False: batched GEMMs, faster by about a third at 8
    configurations but batch-dependent in the last bits (see :func:`_rowwise_linear`).
    ``details``: add ``details`` to each result (no cache read then): ``logits [scored, vocab]``,
    per-position ``nll``/``kl``/``top1``, the closed-loop ``access_log``, the ``dense_trace`` and
    the ``closed_trace`` (the activations this row's policy scored, so that replaying it must give
    the closed-loop masks and hits exactly). These take ``rows x L x tokens x (d_model + d_ff) x 4``
    bytes (about 2 GB for 9 rows of SmolLM2 over 1024 tokens): meant for tests and short runs.

    Returns one dict per configuration, in order: the metrics of :data:`METRICS`, the normalized
    ``config``, ``label`` and run facts. Bad input raises a one-line DipsimError before any model
    work.
    """
    from traces.corpus import load_corpus
    from traces.models import LoadedModel, resolve

    if isinstance(configs, dict):
        configs = [configs]
    if not isinstance(configs, (list, tuple)) or not configs:
        raise DipsimError("configs must be a non-empty list of configurations")
    cfgs = [normalize_config(c, f"config {i + 1}" if len(configs) > 1 else "config") for i, c in enumerate(configs)]
    tokens, prefill, warmup, calib_tokens = _check_run_args(tokens, prefill, warmup, calib_tokens)
    corpus = load_corpus(text, dataset, text_column)
    source = model.source if isinstance(model, LoadedModel) else resolve(model)
    model_key = _model_key(source)
    run_key = {"tokens": tokens, "prefill": prefill, "warmup": warmup, "calib_tokens": calib_tokens,
               "batch_invariant": bool(batch_invariant)}
    keys = [_result_key(model_key, corpus.digest, run_key, c) for c in cfgs]
    results: list[dict[str, Any] | None] = [None] * len(cfgs)
    if reuse and not details:
        for i, k in enumerate(keys):
            hit = _read_cached(k)
            if hit is not None:
                results[i] = {**hit, "label": cfgs[i]["label"], "config": cfgs[i], "from_cache": True}
    todo = [i for i, r in enumerate(results) if r is None]
    if not todo:
        return results  # type: ignore[return-value]

    from traces.capture import tokenize_prefix
    from traces.models import load_model

    lm = model if isinstance(model, LoadedModel) else load_model(model)
    computed = _evaluate_loaded(lm, [cfgs[i] for i in todo], corpus, tokens, prefill, warmup, calib_tokens,
                                progress, details, batch_invariant, tokenize_prefix)
    for i, res in zip(todo, computed):
        if reuse:
            _write_cached(keys[i], {k: v for k, v in res.items() if k not in ("config", "label", "details")})
        results[i] = res
    return results  # type: ignore[return-value]


def _evaluate_loaded(lm, cfgs, corpus, tokens, prefill, warmup, calib_tokens, progress, details,
                     batch_invariant, tokenize_prefix) -> list[dict[str, Any]]:
    from .replay import calibration_scores, make_groups, prepare, replay

    info = lm.info
    meta = dict(info.as_meta())
    bos = getattr(lm.tokenizer, "bos_token_id", None)
    ids = tokenize_prefix(lm.tokenizer, corpus, tokens)
    seq = ([bos] if bos is not None else []) + list(ids)
    n_pre = (1 if bos is not None else 0) + prefill
    cfg_text = getattr(lm.model.config, "text_config", None) or lm.model.config
    max_pos = getattr(cfg_text, "max_position_embeddings", None)
    if max_pos and len(seq) > int(max_pos):
        raise DipsimError(f"{len(seq)} positions exceed {info.model}'s context of {max_pos}; ask for fewer --tokens")
    meta.update(corpus=corpus.name, corpus_digest=corpus.digest, context=len(seq), bos=bos is not None,
                has_h=True)
    # per-layer keep lists and the like are checked against the real dimensions before any forward
    policies = []
    for i, c in enumerate(cfgs):
        policy, kw = _replay_kwargs(c)
        try:
            make_groups(meta, policy, keep=kw["keep"], keep_up=kw["keep_up"], keep_gate=kw["keep_gate"],
                        keep_down=kw["keep_down"], weight_format=kw["weight_format"])
        except DipsimError as e:
            raise DipsimError(f"config {c['label']!r}: {e}") from None
        policies.append((policy, kw))

    t_start = time.perf_counter()
    trace = dense_trace(lm, seq, n_pre, meta)
    t_trace = time.perf_counter() - t_start
    T = trace.n_tokens
    runs, row = [], 0
    for c, (policy, kw) in zip(cfgs, policies):
        needs_calib = policy.needs_calibration or c["cache"] == "pinned" or c["allocation"] != "uniform"
        groups0 = make_groups(meta, policy, keep=kw["keep"], keep_up=kw["keep_up"], keep_gate=kw["keep_gate"],
                              keep_down=kw["keep_down"], weight_format=kw["weight_format"]) if needs_calib else []
        calib = calibration_scores(trace, groups0, calib_tokens) if needs_calib else None
        setup = prepare(meta, policy, c["cache"], c["allocation"], keep=kw["keep"], keep_up=kw["keep_up"],
                        keep_gate=kw["keep_gate"], keep_down=kw["keep_down"], dram_fraction=kw["dram_fraction"],
                        dram_bytes=kw["dram_bytes"], weight_format=kw["weight_format"],
                        cache_params=kw["cache_params"], calib=calib, allocation_params=kw["allocation_params"])
        r = 0 if not any(g.pruned for g in setup.groups) else (row := row + 1)
        runs.append(_ConfigRun(c, setup, meta, T, r, calib))
    n_rows = row + 1

    loop = closed_loop(lm, seq, runs, n_rows, n_pre, progress=progress, details=details,
                       batch_invariant=batch_invariant)
    out = []
    for c, (policy, kw), r in zip(cfgs, policies, runs):
        closed = r.access_log(warmup, loop.seconds).totals()
        t0 = time.perf_counter()
        opened = replay(trace, policy, c["cache"], c["allocation"], keep=kw["keep"], keep_up=kw["keep_up"],
                        keep_gate=kw["keep_gate"], keep_down=kw["keep_down"], dram_fraction=kw["dram_fraction"],
                        dram_bytes=kw["dram_bytes"], weight_format=kw["weight_format"], warmup=warmup,
                        calib_tokens=calib_tokens, cache_params=kw["cache_params"],
                        allocation_params=kw["allocation_params"]).totals()
        t_open = time.perf_counter() - t0
        nll, kl, top1 = loop.nll[r.row], loop.kl[r.row], loop.top1[r.row]
        res: dict[str, Any] = {
            "label": c["label"],
            "perplexity": float(np.exp(nll.mean())),
            "kl_to_dense": float(kl.mean()),
            "top1_agreement": float(top1.mean()),
            "hit_rate": float(closed["hit_rate"]),
            "flash_bytes_per_token": float(closed["flash_bytes_per_token"]),
            "dram_bytes_per_token": float(closed["dram_bytes_per_token"]),
            "mlp_bytes_per_token": float(closed["mlp_bytes_per_token"]),
            "open_loop_hit_rate": float(opened["hit_rate"]),
            "open_loop_flash_bytes_per_token": float(opened["flash_bytes_per_token"]),
            "keep_actual": {g: float(v["keep"]) for g, v in closed["groups"].items()},
            "dense_perplexity": float(np.exp(loop.nll[0].mean())),
            "nll": float(nll.mean()),
            "tokens": int(nll.size),
            "cache_tokens": int(closed["tokens"]),
            "prefill": prefill,
            "warmup": warmup,
            "model": info.model,
            "corpus": corpus.name,
            "corpus_digest": corpus.digest,
            "batch_rows": n_rows,
            "row": r.row,
            "loop_seconds": loop.seconds,
            "select_seconds": loop.extra["select_seconds"],
            "trace_seconds": t_trace,
            "open_loop_seconds": t_open,
            "from_cache": False,
            "config": c,
        }
        if details:
            from traces.format import Trace

            res["details"] = {"logits": loop.logits[:, r.row], "nll": nll, "kl": kl, "top1": top1,
                              "access_log": r.access_log(warmup, loop.seconds),
                              "closed_trace": Trace.from_arrays(loop.extra["x"][r.row], loop.extra["h"][r.row],
                                                                meta),
                              "dense_trace": trace}
        out.append(res)
    return out


# --------------------------------------------------------------------------- command line
EVAL_HELP = """\
Run the real model with masking and a DRAM cache inside its forward pass (closed loop) and report
perplexity, KL divergence and top-1 agreement to the dense model, the closed-loop hit rate and
flash bytes per token, and beside them the open-loop hit rate (replay of the dense trace of the
same tokens with the same configuration).

Several configurations run in one batched forward pass (one batch row each), so a sweep costs
little more than one run. They are the product of the repeatable options --masking, --gamma,
--keep, --cache and --dram-fraction (--gamma applies to dip-ca only), plus every --config entry.
--config takes a JSON or YAML mapping or list of mappings, inline or as a file, e.g.
  --config '{"masking": "dip", "keep": 0.75}'  --config sweep.yaml
with the keys masking, gamma, fixed_top_n, seed, keep, keep_up, keep_gate, keep_down, cache,
cache_params, allocation, allocation_params, dram_fraction, dram_bytes, weight_format, label.
Without --config and without any of those options, one configuration runs: dip-ca, gamma 0.2,
keep 0.5, lru, dram fraction 0.5. Results are cached on disk (--no-reuse to recompute).

Tokens: BOS + the first --tokens text tokens, one context window; every text token after the
--prefill ones is scored (perplexity = exp(mean NLL)), its first prediction coming from the dense
prompt. Example:
  dipsim eval --tokens 1024 --masking dip-ca --gamma 1 --gamma 0.5 --gamma 0.2 --keep 0.5
"""


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``eval`` subcommand to a ``dipsim`` subparsers object; returns its parser."""
    from .cli import _add_corpus_args, _positive_int

    s = subparsers.add_parser("eval", description=EVAL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                              help="closed-loop accuracy: perplexity, KL to dense, closed- vs open-loop hit rate")
    s.add_argument("--model", default="smollm2-135m",
                   help="smollm2-135m (default), gemma3-270m, a local Hugging Face model directory, or a .gguf file")
    s.add_argument("--tokens", type=_positive_int, default=1024, help="text tokens to run (default 1024)")
    s.add_argument("--prefill", type=int, default=0,
                   help="leading text tokens run densely as a prompt and left out of every metric (default 0)")
    s.add_argument("--warmup", type=int, default=16,
                   help="decode tokens left out of the hit rates, as in replay (default 16)")
    s.add_argument("--calib-tokens", type=_positive_int, default=64,
                   help="dense-trace prefix used by calibrated policies (threshold, static, pinned; default 64)")
    g = s.add_argument_group("configurations (each option repeatable; the product of the values runs)")
    g.add_argument("--masking", action="append", metavar="NAME",
                   help="masking policy: dense, dip, dip-ca, glu-prune, threshold, static, random (default dip-ca)")
    g.add_argument("--gamma", action="append", type=float, metavar="G", help="dip-ca's gamma in [0, 1] (default 0.2)")
    g.add_argument("--keep", action="append", type=float, metavar="F", help="fraction of columns kept (default 0.5)")
    g.add_argument("--keep-down", type=float, metavar="F", help="keep of W_down only (default: --keep)")
    g.add_argument("--keep-gate", type=float, metavar="F",
                   help="separate keep for W_gate (default: shares W_up's mask)")
    g.add_argument("--fixed-top-n", type=int, metavar="N", help="dip-ca: the N largest inputs are never penalised")
    g.add_argument("--seed", type=int, metavar="S", help="random masking's seed")
    g.add_argument("--cache", action="append", metavar="NAME", help="DRAM cache policy (default lru; not belady)")
    g.add_argument("--dram-fraction", action="append", type=float, metavar="F",
                   help="DRAM cache budget as a share of the MLP weights (default 0.5)")
    g.add_argument("--allocation", default=None, help="budget split over layers: uniform (default) or benefit")
    g.add_argument("--weight-format", default=None, help="bytes per weight: source (default), int4, int8, fp16, ...")
    g.add_argument("--config", action="append", metavar="JSON|YAML|FILE",
                   help="configuration(s) as a JSON/YAML mapping or list, inline or in a file (repeatable)")
    s.add_argument("--format", choices=["table", "json"], default="table", help="output format (default table)")
    s.add_argument("--no-reuse", action="store_true", help="recompute, and neither read nor write the result cache")
    s.add_argument("--batched-gemm", action="store_true",
                   help="decode with batched GEMMs: ~1.5x faster, but each configuration's figures then depend "
                        "in the last bits on the batch it ran in (default: row-by-row, batch-invariant)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_corpus_args(s)
    return s


def _parse_config_arg(text: str) -> list[dict[str, Any]]:
    import yaml

    p = Path(text)
    where = "--config"
    if p.suffix.lower() in (".json", ".yaml", ".yml") or (len(text) < 4096 and "\n" not in text and p.is_file()):
        if not p.is_file():
            raise DipsimError(f"--config file not found: {p}")
        text, where = p.read_text(encoding="utf-8"), str(p)
    try:
        data = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as e:
        raise DipsimError(f"{where}: not JSON or YAML ({str(e).splitlines()[0]})") from None
    if isinstance(data, dict) and isinstance(data.get("configs"), list):
        data = data["configs"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise DipsimError(f"{where}: expected a mapping or a list of mappings (configurations)")
    return data


def configs_from_args(a: argparse.Namespace) -> list[dict[str, Any]]:
    """The configurations an ``eval`` command line asks for (see the subcommand's help)."""
    import itertools

    extra = []
    for text in a.config or []:
        extra += _parse_config_arg(text)
    axes_given = any(getattr(a, k) for k in ("masking", "gamma", "keep", "cache", "dram_fraction")) or any(
        getattr(a, k) is not None for k in ("keep_down", "keep_gate", "fixed_top_n", "seed", "allocation",
                                            "weight_format"))
    out: list[dict[str, Any]] = []
    if axes_given or not extra:
        seen = set()
        for m, gamma, keep, cache, frac in itertools.product(
                a.masking or [DEFAULT_CONFIG["masking"]], a.gamma or [DEFAULT_CONFIG["gamma"]],
                a.keep or [DEFAULT_CONFIG["keep"]], a.cache or [DEFAULT_CONFIG["cache"]],
                a.dram_fraction or [DEFAULT_CONFIG["dram_fraction"]]):
            c: dict[str, Any] = {"masking": m, "keep": keep, "cache": cache, "dram_fraction": frac}
            if m == "dip-ca":
                c["gamma"] = gamma
                if a.fixed_top_n is not None:
                    c["fixed_top_n"] = a.fixed_top_n
            if m == "random" and a.seed is not None:
                c["seed"] = a.seed
            for k in ("keep_down", "keep_gate", "allocation", "weight_format"):
                if getattr(a, k) is not None:
                    c[k] = getattr(a, k)
            key = json.dumps(c, sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append(c)
    return out + extra


def table_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"config": r["label"], "perplexity": r["perplexity"], "kl_to_dense": r["kl_to_dense"],
             "top1": r["top1_agreement"], "hit_rate": r["hit_rate"], "open_hit_rate": r["open_loop_hit_rate"],
             "flash_MB/tok": r["flash_bytes_per_token"] / 1e6,
             "open_flash_MB/tok": r["open_loop_flash_bytes_per_token"] / 1e6} for r in results]


def run_eval(a: argparse.Namespace) -> int:
    """The ``eval`` subcommand: evaluate the configurations and print a table or JSON."""
    from .cli import print_table

    configs = configs_from_args(a)
    results = evaluate(a.model, configs, text=a.text, dataset=a.dataset, text_column=a.text_column,
                       tokens=a.tokens, prefill=a.prefill, warmup=a.warmup, calib_tokens=a.calib_tokens,
                       reuse=not a.no_reuse, progress=not a.quiet, batch_invariant=not a.batched_gemm)
    if a.format == "json":
        rows = [{k: v for k, v in r.items() if k != "details"} for r in results]
        print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2))
        return 0
    r0 = results[0]
    print(f"{r0['model']}: {r0['tokens']} scored tokens of {r0['corpus']} (prefill {r0['prefill']}), dense "
          f"perplexity {r0['dense_perplexity']:.4f}; hit rates by bytes over {r0['cache_tokens']} tokens after a "
          f"warm-up of {r0['warmup']}")
    print_table(table_rows(results))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m simulator.accuracy eval ...`` (the same as ``dipsim eval``)."""
    p = argparse.ArgumentParser(prog="python -m simulator.accuracy")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_eval_parser(sub)
    a = p.parse_args(argv)
    try:
        return run_eval(a)
    except DipsimError as e:
        print(f"dipsim: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
