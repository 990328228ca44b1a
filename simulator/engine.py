"""Discrete-event simulation of decoding: flash, DRAM and compute per token and layer (SimPy).

    res = simulate(log, "phone-12gb-ufs40")        # an AccessLog from replay, a device profile
    res.summary()                                  # tokens/s, p50/p99 latency, flash requests, ...

Per token, layer after layer, with the real data dependencies of DIP (no predictor: a mask is
known only when its input is):

    attention      attention weights + KV cache from DRAM, compute            (roofline)
    up/gate stage  mask known -> missed columns from flash  |  cached columns from DRAM + compute
                   -> the missed columns, once landed, from DRAM + compute
    down stage     mask known (GLU output) -> the same for W_down
    (after the last layer: the LM head)

Resources: one flash device (a batch of requests per stage; its time from the vectorized queue
model of ``devices.flash``, or every request as its own SimPy event with ``mode="fine"``), one DRAM
channel and one compute unit. Compute streams its weights from DRAM, so a compute step holds both
for max(bytes / DRAM bandwidth, FLOPs / compute rate). ``overlap_io``: the cached path runs while
flash reads are in flight (else after them); ``overlap_compute``: cached columns are computed
before the missed ones land (else all compute waits for the flash). ``miss_via_dram``: landed
columns are read from DRAM by the compute (unified memory), as on a phone.

``analytic`` (the DIP paper's bytes/bandwidth model) is computed beside every run.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import DipsimError
from common.jit import njit

from .devices.flash import extents_to_requests, link_done_last, sequential_mask, size_histogram, unit_done_times
from .layout import Layout
from .replay import AccessLog



# ----------------------------------------------------------------------------- model shape
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
                   tied_lm_head=None if meta.get("tied_lm_head") is None else bool(meta["tied_lm_head"]))

    def kv_bytes(self, position: int | np.ndarray) -> np.ndarray:
        """KV cache bytes one layer reads at a position (keys and values of every earlier token)."""
        return 2 * self.n_kv_heads * self.head_dim * self.kv_bytes_per_value * np.asarray(position, dtype=float)

    @property
    def attn_bytes(self) -> float:
        return self.attn_params_per_layer * self.static_bytes_per_weight

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


# ----------------------------------------------------------------------------- device models
@dataclass(frozen=True)
class Models:
    name: str
    flash: Any
    dram: Any
    compute: Any
    dram_capacity: float | None
    flash_energy: float | None          # J per byte read
    analytic_only: bool
    spec: Any = None


def device_models(device: Any) -> Models:
    """Flash / DRAM / compute models of a device given by name, YAML path, or a loaded Device."""
    from .devices.compute import ComputeModel
    from .devices.dram import DramModel
    from .devices.flash import FlashModel
    from .hardware import load_device

    dev = load_device(device) if isinstance(device, (str, os.PathLike)) else device
    flash = FlashModel.from_spec(dev.flash)
    dram = DramModel.from_spec(dev.dram)
    compute = ComputeModel.from_spec(dev.compute) if getattr(dev, "compute", None) is not None else None
    cap = getattr(dev, "usable_dram_bytes", None) or getattr(dev, "dram_bytes", None)
    e_flash = getattr(dev.flash, "read_energy_per_byte", None)
    return Models(dev.name, flash, dram, compute, cap, e_flash, bool(getattr(dev, "analytic", False)), dev)


# ----------------------------------------------------------------------------- flash batches
@njit
def _stage_times(stage_of, size, seq, n_stages, latency, penalty, unit_bw, link_bw, P, host, Q):
    """Batch time of every stage (requests grouped by stage, in issue order): the model of
    ``devices.flash.FlashModel.schedule`` evaluated for many batches in one compiled loop."""
    out = np.zeros(n_stages)
    n = size.shape[0]
    i = 0
    while i < n:
        s_id = stage_of[i]
        j = i
        while j < n and stage_of[j] == s_id:
            j += 1
        t = np.empty(j - i)
        x = np.empty(j - i)
        for r in range(j - i):
            t[r] = latency + size[i + r] / unit_bw + (0.0 if seq[i + r] else penalty)
            x[r] = size[i + r] / link_bw
        out[s_id] = link_done_last(unit_done_times(t, min(P, j - i), host, Q), x)
        i = j
    return out


@dataclass
class EngineResult:
    """Per-token timings and the run's summary."""

    device: str
    mode: str
    latency: np.ndarray              # [T] seconds per token
    flash_time: np.ndarray           # [T] seconds the flash was busy
    dram_time: np.ndarray            # [T]
    compute_time: np.ndarray         # [T]
    stall_time: np.ndarray           # [T] waiting on flash while DRAM and compute are idle
    flash_bytes: np.ndarray          # [T] bytes read from flash (page-rounded requests)
    flash_requests: np.ndarray       # [T]
    dram_bytes: np.ndarray           # [T]
    energy: np.ndarray | None        # [T] joules (None without energy figures)
    warmup: int
    hit_rate: float
    request_hist: dict[int, int]
    extra: dict[str, Any] = field(default_factory=dict)
    events: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        sl = slice(self.warmup, None)
        lat = self.latency[sl]
        n_req = self.flash_requests[sl].sum()
        d: dict[str, Any] = {
            "device": self.device,
            "engine_mode": self.mode,
            "tokens_per_s": 1.0 / lat.mean() if lat.size and lat.mean() > 0 else math.inf,
            "latency_ms_mean": 1e3 * lat.mean(),
            "latency_ms_p50": 1e3 * float(np.percentile(lat, 50)),
            "latency_ms_p99": 1e3 * float(np.percentile(lat, 99)),
            "flash_bytes_per_token_read": float(self.flash_bytes[sl].mean()),
            "flash_requests_per_token": float(self.flash_requests[sl].mean()),
            "mean_request_bytes": float(self.flash_bytes[sl].sum() / n_req) if n_req else 0.0,
            "dram_bytes_per_token_total": float(self.dram_bytes[sl].mean()),
            "hit_rate": self.hit_rate,
            "time_flash_ms": 1e3 * float(self.flash_time[sl].mean()),
            "time_dram_ms": 1e3 * float(self.dram_time[sl].mean()),
            "time_compute_ms": 1e3 * float(self.compute_time[sl].mean()),
            "time_stall_ms": 1e3 * float(self.stall_time[sl].mean()),
            "energy_mj_per_token": 1e3 * float(self.energy[sl].mean()) if self.energy is not None else None,
            "request_size_histogram": {str(k): v for k, v in sorted(self.request_hist.items())},
            "events": self.events,
            "engine_seconds": self.seconds,
        }
        d.update(self.extra)
        return d


def _check_options(mode: str) -> None:
    if mode not in ("batch", "fine"):
        raise DipsimError(f"unknown engine mode {mode!r}; allowed: batch, fine")


def simulate(log: AccessLog, device: Any, *, layout: dict[str, Any] | Layout | None = None, mode: str = "batch",
             overlap_io: bool = True, overlap_compute: bool = True, miss_via_dram: bool = True,
             prefetch: bool = True, compute_dtype: str = "fp16", chrome_trace: str | os.PathLike | None = None,
             chrome_tokens: int = 3) -> EngineResult:
    """Time every token of ``log`` on ``device``; see the module docstring.

    ``overlap_compute=False`` adds compute time to memory time instead of taking the larger
    (no overlap of a step's weight streaming with its arithmetic).

    ``prefetch``: a stage whose masks do not depend on the token's activations (dense groups, such
    as up/gate under glu-prune or everything under dense masking, and static masking) need not wait
    for them: its flash reads are issued together when the token starts, as one deep-queue batch in
    the background, and the token ends when both its dependent chain and that batch (plus the
    dependent stages' own flash time, since they share the device) are done."""
    _check_options(mode)
    t_start = time.perf_counter()
    models = device_models(device)
    shape = ModelShape.from_meta(log.trace_meta)
    if isinstance(layout, Layout):
        lay = layout
    else:
        opts = dict(layout or {})
        unknown = sorted(set(opts) - {"reorder", "calib_tokens"})
        if unknown:
            raise DipsimError(f"unknown layout option {unknown[0]!r}; allowed: reorder, calib_tokens")
        lay = Layout(log, **opts)
    fl = models.flash
    T, L = log.n_tokens, log.n_layers
    page = int(fl.page_bytes)
    max_req = fl.max_request_bytes
    ug_groups = [g for g in log.groups if g != "down"]
    stages = [ug_groups, ["down"]]  # per layer: up/gate stage, then down stage
    static = log.config.get("masking") == "static"
    known_early = [prefetch and all(static or bool((log.groups[g].k >= log.groups[g].n_columns).all()) for g in names)
                   for names in stages]
    bg_time = np.zeros(T)   # per token: the prefetched stages' reads, as one background batch

    # ---- flash requests of every stage, in issue order, and their batch times; a block of tokens
    # at a time: stage id = (token * L + layer) * 2 + (0 up/gate, 1 down), requests sorted by stage
    # and offset, so the device sees them layer by layer, up/gate before down, ascending offsets
    stage_time = np.zeros((T, L, 2))
    flash_bytes = np.zeros(T)
    flash_reqs = np.zeros(T)
    hist: dict[int, int] = {}
    fine_sizes: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}
    prev_end = None
    P = int(min(fl.units, fl.queue_depth, 1 << 30))
    block = max(1, min(T, 4_000_000 // max(sum(g.n_columns for g in log.groups.values()) * L, 1)))
    for t0 in range(0, T, block):
        t1 = min(t0 + block, T)
        segs, starts, ends = [], [], []
        for s_i, names in enumerate(stages):
            for g in names:
                gl = log.groups[g]
                missed = np.unpackbits(gl.missed_bits[t0:t1], axis=2, count=gl.n_columns).view(bool)
                tok, layer, a, b = lay.block_extents(g, missed)
                segs.append((tok * L + layer) * 2 + s_i)
                starts.append(a)
                ends.append(b)
        req = extents_to_requests(np.concatenate(starts), np.concatenate(ends), page_bytes=page,
                                  max_request_bytes=max_req, segments=np.concatenate(segs))
        seq = sequential_mask(req.offsets, req.sizes, prev_end)
        if len(req.sizes):
            prev_end = int(req.offsets[-1] + req.sizes[-1])
        n_st = (t1 - t0) * L * 2
        kernel = (float(fl.latency), float(fl.random_penalty), float(fl.unit_bandwidth), float(fl.link_bandwidth), P,
                  float(fl.host_overhead), int(min(fl.queue_depth, 1 << 30)))
        stage_time[t0:t1] = _stage_times(req.segments, req.sizes.astype(np.float64), seq, n_st,
                                         *kernel).reshape(t1 - t0, L, 2)
        tok_of = req.segments // (2 * L)
        if any(known_early):
            early = np.array(known_early)[req.segments % 2]
            bg_time[t0:t1] = _stage_times(tok_of[early], req.sizes[early].astype(np.float64), seq[early], t1 - t0,
                                          *kernel)
            for s_i, e in enumerate(known_early):
                if e:
                    stage_time[t0:t1, :, s_i] = 0.0
        flash_bytes[t0:t1] = np.bincount(tok_of, weights=req.sizes, minlength=t1 - t0)
        flash_reqs[t0:t1] = np.bincount(tok_of, minlength=t1 - t0)
        for k, v in size_histogram(req.sizes).items():
            hist[k] = hist.get(k, 0) + v
        if mode == "fine":
            bounds = req.segment_starts(n_st)
            for sid in np.flatnonzero(np.diff(bounds)):
                a, b = bounds[sid], bounds[sid + 1]
                fine_sizes[(t0 + sid // (2 * L), (sid // 2) % L, sid % 2)] = \
                    (req.sizes[a:b].astype(np.float64), seq[a:b])

    # ---- bytes and FLOPs per stage
    dram = models.dram
    comp = models.compute
    positions = (np.arange(T) % max(shape.context, 1)) + 1
    hit_b = np.zeros((T, L, 2))
    miss_b = np.zeros((T, L, 2))
    flops = np.zeros((T, L, 2))
    for s_i, names in enumerate(stages):
        for g in names:
            gl = log.groups[g]
            hit_b[:, :, s_i] += gl.hits * gl.bytes_per_column
            miss_b[:, :, s_i] += gl.misses * gl.bytes_per_column
            per_col = 2 * (gl.bytes_per_column / _bpw(log))  # 2 FLOPs per weight of each selected column
            flops[:, :, s_i] += gl.selected * per_col
    attn_b = shape.attn_bytes + shape.kv_bytes(positions)                      # [T]
    attn_f = 2 * shape.attn_params_per_layer + 4 * positions * shape.n_heads * shape.head_dim
    head_b, head_f = shape.head_bytes, 2.0 * shape.lm_head_params

    def rt(nbytes):
        return dram.read_time(nbytes)

    def ct(f):
        return comp.time(f, compute_dtype) if comp is not None else 0.0

    both = np.maximum if overlap_compute else np.add   # roofline, or memory then arithmetic
    t_hit = both(rt(hit_b), ct(flops * _share(hit_b, miss_b)))
    t_miss = both(rt(miss_b) if miss_via_dram else 0.0, ct(flops * (1 - _share(hit_b, miss_b))))
    t_attn = both(rt(attn_b), ct(attn_f))
    t_head = float(both(rt(head_b), ct(head_f)))

    # ---- the simulation
    if mode == "fine" and any(known_early):
        fine_sizes = {k: v for k, v in fine_sizes.items() if not known_early[k[2]]}
    res = _run_simpy(models, T, L, stage_time, t_hit, t_miss, t_attn, t_head, mode, fine_sizes, overlap_io,
                     chrome_trace, chrome_tokens, bg_time)
    latency, busy_flash, busy_dc, events = res

    dram_bytes = hit_b.sum(axis=(1, 2)) + (miss_b.sum(axis=(1, 2)) if miss_via_dram else 0.0) \
        + L * attn_b + head_b
    energy = None
    if models.flash_energy is not None and dram.read_energy_per_byte is not None:
        energy = flash_bytes * models.flash_energy + dram_bytes * dram.read_energy_per_byte
    tot = log.totals()
    stall = np.maximum(latency - busy_dc, 0.0)
    dram_time = np.broadcast_to(rt(dram_bytes), (T,)).astype(float)
    compute_time = np.broadcast_to(ct(flops.sum(axis=(1, 2)) + L * attn_f + head_f), (T,)).astype(float)
    result = EngineResult(models.name, mode, latency, busy_flash, dram_time, compute_time, stall, flash_bytes, flash_reqs,
                          dram_bytes, energy, log.warmup, tot["hit_rate"], hist, events=events)
    result.extra.update(_footprint_and_baselines(log, lay, models, shape, t_attn, t_head, positions, miss_via_dram,
                                                 result))
    result.seconds = time.perf_counter() - t_start
    return result


def _bpw(log: AccessLog) -> float:
    return float(log.config.get("bytes_per_weight") or log.trace_meta["bytes_per_weight"])


def _share(hit_b: np.ndarray, miss_b: np.ndarray) -> np.ndarray:
    tot = hit_b + miss_b
    return np.divide(hit_b, tot, out=np.zeros_like(tot), where=tot > 0)


def _stage_durations(t_flash, t_hit, t_miss, overlap_io):
    """Seconds of each stage in batch mode: the cached path (DRAM reads + compute of cached columns)
    runs beside the flash reads when ``overlap_io``, else after them; the landed columns are
    computed once both are done."""
    first = np.maximum(t_flash, t_hit) if overlap_io else t_flash + t_hit
    return first + t_miss


def _run_simpy(models, T, L, stage_time, t_hit, t_miss, t_attn, t_head, mode, fine_sizes, overlap_io,
               chrome_trace, chrome_tokens, bg_time):
    """One SimPy process decodes the tokens in order: per layer the attention step and the two
    stages. In batch mode a stage is one timeout (its flash batch time comes from the vectorized
    queue model); in fine mode the flash reads of a stage are one SimPy process per request, run
    beside the cached path."""
    import simpy

    env = simpy.Environment()
    latency = np.zeros(T)
    stage_dur = _stage_durations(stage_time, t_hit, t_miss, overlap_io)
    fast = mode == "batch" and not chrome_trace
    layer_dur = stage_dur.sum(axis=2) + t_attn[:, None]
    trace_events: list[dict[str, Any]] | None = [] if chrome_trace else None
    counter = [0]

    def note(name, track, t0, dur, tok):
        if trace_events is not None and tok < chrome_tokens and dur > 0:
            trace_events.append({"name": name, "ph": "X", "ts": t0 * 1e6, "dur": dur * 1e6, "pid": 1, "tid": track,
                                 "args": {"token": tok}})

    def fine_stage(tok, layer, s_i):
        t0 = env.now
        sizes, seq = fine_sizes[(tok, layer, s_i)]
        flash = models.flash.fine_process(env, sizes, seq)
        if not overlap_io:
            yield flash
        yield env.timeout(t_hit[tok, layer, s_i])
        yield flash
        yield env.timeout(t_miss[tok, layer, s_i])
        stage_time[tok, layer, s_i] = flash.value   # the per-request simulation's own flash time
        counter[0] += len(sizes)
        return env.now - t0

    def layer_steps(tok, layer):
        a = env.now
        yield env.timeout(t_attn[tok])
        note(f"attention L{layer}", "dram+compute", a, t_attn[tok], tok)
        for s_i, label in ((0, "up/gate"), (1, "down")):
            a = env.now
            if mode == "fine" and (tok, layer, s_i) in fine_sizes:
                yield env.process(fine_stage(tok, layer, s_i))
            else:
                yield env.timeout(stage_dur[tok, layer, s_i])
            if trace_events is not None and tok < chrome_tokens:
                f = stage_time[tok, layer, s_i]
                note(f"flash L{layer} {label}", "flash", a, f, tok)
                note(f"cached L{layer} {label}", "dram+compute", a if overlap_io else a + f,
                     t_hit[tok, layer, s_i], tok)
                note(f"landed L{layer} {label}", "dram+compute", env.now - t_miss[tok, layer, s_i],
                     t_miss[tok, layer, s_i], tok)

    def token_proc():
        for tok in range(T):
            t0 = env.now
            # prefetched reads: one background batch, sharing the device with the dependent reads
            bg = env.timeout(bg_time[tok] + stage_time[tok].sum()) if bg_time[tok] > 0 else None
            if bg is not None:
                note("prefetched reads", "flash (prefetch)", t0, bg_time[tok], tok)
            for layer in range(L):
                if fast:  # plain batch mode: a layer (attention + both stages) is one event
                    yield env.timeout(layer_dur[tok, layer])
                else:
                    yield from layer_steps(tok, layer)
            yield env.timeout(t_head)
            note("lm head", "dram+compute", env.now - t_head, t_head, tok)
            if bg is not None:
                yield bg
            counter[0] += (L if fast else 3 * L) + 1 + (bg is not None)
            latency[tok] = env.now - t0

    env.process(token_proc())
    env.run()
    if chrome_trace:
        from common.io import atomic, check_file

        with atomic(check_file(chrome_trace, "chrome_trace")) as tmp:
            tmp.write_text(json.dumps({"traceEvents": trace_events, "displayTimeUnit": "ms"}))
    busy_flash = stage_time.sum(axis=(1, 2)) + bg_time
    busy_dc = L * t_attn + (t_hit + t_miss).sum(axis=(1, 2)) + t_head
    return latency, busy_flash, busy_dc, counter[0]


def _footprint_and_baselines(log, lay, models, shape, t_attn, t_head, positions, miss_via_dram, result) -> dict:
    """DRAM footprint, memory saved against a dense model in DRAM, speed-up against streaming the
    dense MLP from flash, and the paper's analytic tokens/s for the same access log."""
    from .devices import analytic

    T, L = log.n_tokens, log.n_layers
    cache_bytes = sum(float((g.capacity * g.bytes_per_column).sum()) for g in log.groups.values())
    mlp_bytes = float(log.extra.get("mlp_bytes") or sum(g.n_columns * g.bytes_per_column for g in log.groups.values()) * L)
    kv_max = float(L * shape.kv_bytes(min(shape.context, T)))
    footprint = shape.static_weight_bytes + cache_bytes + kv_max
    dense_dram = shape.static_weight_bytes + mlp_bytes + kv_max
    # dense streaming: no mask to wait for, so the whole MLP can be read ahead as one stream of
    # maximum-size requests (the device's full queue busy) while attention and the matmuls run
    # from DRAM; a token takes the longer of the two
    fl = models.flash
    sizes = np.concatenate([lay.region_requests(g, int(fl.page_bytes), fl.max_request_bytes).sizes
                            for g in log.groups])
    stream = fl.batch_time(sizes, np.ones(len(sizes), dtype=bool))
    mlp_dc = float(np.mean(models.dram.read_time(mlp_bytes / max(L, 1))) * L) if miss_via_dram else 0.0
    dense_stream = max(stream, float(t_attn[log.warmup:].mean() * L + t_head + mlp_dc))
    sl = slice(log.warmup, None)
    lat = result.latency[sl].mean()
    # the paper's model, token by token: one (layer, matrix group) pair per masked linear layer
    hit = np.stack([g.hits[sl] * g.bytes_per_column for g in log.groups.values()], axis=2)     # [T', L, G]
    miss = np.stack([g.misses[sl] * g.bytes_per_column for g in log.groups.values()], axis=2)
    static_dram = shape.attn_bytes * L + shape.kv_bytes(positions[sl]) * L + shape.head_bytes   # [T']
    t_an = analytic.token_time(models.spec, hit, miss, static_dram_bytes=static_dram, layer_axes=(1, 2))
    t_an = float(np.mean(t_an))
    return {
        "dram_footprint_bytes": footprint,
        "dram_cache_bytes": cache_bytes,
        "static_bytes": shape.static_weight_bytes + kv_max,
        "fits_in_dram": (models.dram_capacity is None) or footprint <= models.dram_capacity,
        "memory_saved_bytes": dense_dram - footprint,
        "memory_saved_fraction": (dense_dram - footprint) / dense_dram,
        "dense_stream_tokens_per_s": 1.0 / dense_stream,
        "speedup_vs_dense_stream": dense_stream / lat if lat > 0 else math.inf,
        "analytic_tokens_per_s": 1.0 / float(t_an) if float(t_an) > 0 else math.inf,
    }
