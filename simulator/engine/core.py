"""The engine: one object that decodes the tokens of an access log on a device, layer by layer.

``Engine.run`` owns the loop -- requests and their batch times (``flash_stages``), the memory and
compute time of every step (``_memory_and_compute``), the SimPy timeline (``_simulate``: one process
per token; ``_layer`` and ``_stage`` are its steps), the result -- and each step is a method, so a
variant replaces one step and keeps the loop (as SimPy's resources own their queues and
subclasses fill hooks).
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from common.errors import DipsimError

from ..config import EngineConfig
from ..layout import Layout
from ..replay import AccessLog
from .flash_stages import FlashStages, flash_stages, stage_groups
from .lookahead import chrome_event, early_stages, lookahead_timeline, timeline_events
from .result import EngineResult, footprint_and_baselines
from .shape import ModelShape, Models


def _share(hit_b: np.ndarray, miss_b: np.ndarray) -> np.ndarray:
    tot = hit_b + miss_b
    return np.divide(hit_b, tot, out=np.zeros_like(tot), where=tot > 0)


class Engine:
    """Per token, layer after layer, with DIP's data dependencies: attention, then the up/gate and
    down stages (flash reads of the misses beside the cached path; the landed columns computed
    once both are done), then the LM head (see ``simulator.engine``)."""

    def __init__(self, log: AccessLog, models: Models, shape: ModelShape, layout: Layout, cfg: EngineConfig, *,
                 chrome_trace=None, chrome_tokens: int = 3):
        self.log, self.models, self.shape, self.layout, self.cfg = log, models, shape, layout, cfg
        # the run's choice, else the device profile's assumption (true when it says nothing)
        self.miss_via_dram, self.prefetch = (bool(getattr(cfg, k) if getattr(cfg, k) is not None
                                                  else getattr(models.spec, k, True)) for k in ("miss_via_dram", "prefetch"))
        self.chrome_trace, self.chrome_tokens = chrome_trace, chrome_tokens
        self.T, self.L = log.n_tokens, log.n_layers
        self.events: list[dict[str, Any]] | None = [] if chrome_trace else None

    def run(self) -> EngineResult:
        self.fs: FlashStages = flash_stages(self.log, self.layout, self.models.flash, prefetch=self.prefetch,
                                            keep_requests=self.cfg.mode == "fine")
        self._memory_and_compute()
        latency, busy_flash, busy_dc, n_events = self._simulate()
        return self._result(latency, busy_flash, busy_dc, n_events)

    # ------------------------------------------------------------------ memory and compute
    def _rt(self, nbytes):
        return self.models.dram.read_time(nbytes)

    def _ct(self, flops):
        comp = self.models.compute
        return comp.time(flops, self.cfg.compute_dtype) if comp is not None else 0.0

    def _memory_and_compute(self) -> None:
        """Bytes, FLOPs and seconds of every step: the cached and the landed columns of each stage,
        attention (weights + KV cache) and the LM head; compute streams its weights from DRAM."""
        log, shape, T, L, cfg = self.log, self.shape, self.T, self.L, self.cfg
        self.positions = (np.arange(T) % max(shape.context, 1)) + 1
        self.hit_b, self.miss_b, self.flops = np.zeros((T, L, 2)), np.zeros((T, L, 2)), np.zeros((T, L, 2))
        bpw = float(log.config.get("bytes_per_weight") or log.trace_meta["bytes_per_weight"])
        for s_i, names in enumerate(stage_groups(log)):
            for g in names:
                gl = log.groups[g]
                self.hit_b[:, :, s_i] += gl.hits * gl.bytes_per_column
                self.miss_b[:, :, s_i] += gl.misses * gl.bytes_per_column
                self.flops[:, :, s_i] += gl.selected * 2 * (gl.bytes_per_column / bpw)  # 2 FLOPs per weight
        self.attn_b = shape.attn_bytes + shape.kv_bytes(self.positions)                   # [T]
        self.attn_f = 2 * shape.attn_params_per_layer + 4 * self.positions * shape.n_heads * shape.head_dim
        self.head_b, self.head_f = shape.head_bytes, 2.0 * shape.lm_head_params
        both = np.maximum if cfg.overlap_compute else np.add   # roofline, or memory then arithmetic
        share = _share(self.hit_b, self.miss_b)
        self.t_hit = both(self._rt(self.hit_b), self._ct(self.flops * share))
        self.t_miss = both(self._rt(self.miss_b) if self.miss_via_dram else 0.0, self._ct(self.flops * (1 - share)))
        self.t_attn = both(self._rt(self.attn_b), self._ct(self.attn_f))
        self.t_head = float(both(self._rt(self.head_b), self._ct(self.head_f)))
        # a stage in batch mode: the cached path beside the flash reads (after them without
        # overlap_io), then the landed columns
        first = np.maximum(self.fs.time, self.t_hit) if cfg.overlap_io else self.fs.time + self.t_hit
        self.stage_dur = first + self.t_miss

    # ------------------------------------------------------------------ the timeline
    def _note(self, name: str, track: str, t0: float, dur: float, tok: int) -> None:
        if self.events is not None and tok < self.chrome_tokens and dur > 0:
            self.events.append(chrome_event(name, track, t0, dur, tok))

    def _simulate(self):
        import simpy

        self.env = simpy.Environment()
        self.latency = np.zeros(self.T)
        self.n_events = 0
        early = early_stages(self.log, self.prefetch)
        if early.any():
            self._lookahead(early)
        elif self.cfg.mode == "batch" and self.events is None:   # no timeline asked for
            self._closed_form()
        else:
            self.env.process(self._tokens())
            self._run_events()
        if self.chrome_trace:
            from common.io import atomic, check_file

            with atomic(check_file(self.chrome_trace, "chrome_trace")) as tmp:
                tmp.write_text(json.dumps({"traceEvents": self.events, "displayTimeUnit": "ms"}))
        busy_flash = self.fs.time.sum(axis=(1, 2)) + self.fs.background
        busy_dc = self.L * self.t_attn + (self.t_hit + self.t_miss).sum(axis=(1, 2)) + self.t_head
        return self.latency, busy_flash, busy_dc, self.n_events

    def _run_events(self) -> None:
        """``env.run()``, with Ctrl-C and SIGTERM delivered between events: SimPy would take one that
        lands inside a callback for the failure of an event (``common.interrupts``)."""
        from simpy.core import EmptySchedule

        from common.interrupts import deferred

        step = self.env.step
        with deferred() as check:
            try:
                while True:
                    for _ in range(4096):
                        step()
                    check()
            except EmptySchedule:       # every event done (what env.run() waits for)
                pass

    def _lookahead(self, early: np.ndarray) -> None:
        """A look-ahead policy's reads issued a layer early (``engine/lookahead.py``): the token's
        timeline as a compiled recurrence over layers (batch mode's stage times)."""
        if self.cfg.mode == "fine":
            raise DipsimError("engine: mode: fine does not model reads issued a layer ahead (a look-ahead "
                              "predictor); use mode batch, or engine.prefetch false")
        f, h, m = self.fs.time, self.t_hit, np.broadcast_to(self.t_miss, self.fs.time.shape)
        lat, done, end = lookahead_timeline(np.ascontiguousarray(self.t_attn, dtype=float), f,
                                              np.ascontiguousarray(h, dtype=float), np.ascontiguousarray(m, dtype=float),
                                              early, bool(self.cfg.overlap_io), float(self.t_head))
        self.latency[:] = np.maximum(lat, self._read_ahead_end())
        self.n_events = int(self.T * (3 * self.L + 1))
        if self.events is not None:
            self.events.extend(timeline_events(self.latency, self.t_attn, f, done, end, early, self.chrome_tokens))

    def _closed_form(self) -> None:
        """Plain batch mode without a timeline: every token is its layers one after another, then the
        head, ended no earlier than its read-ahead batch -- what ``_tokens`` simulates event by
        event, summed directly (a test checks the two agree)."""
        own = (self.stage_dur.sum(axis=2) + self.t_attn[:, None]).sum(axis=1) + self.t_head   # a layer: attention + stages
        self.latency[:] = np.maximum(own, self._read_ahead_end())
        self.n_events = int(self.T * (self.L + 1) + np.count_nonzero(self.fs.background > 0))

    def _read_ahead_end(self) -> np.ndarray:
        """Per token, when its read-ahead batch ends (0 without one): it shares the flash device with
        the token's dependent reads, so it ends after both."""
        bg = self.fs.background
        return np.where(bg > 0, bg + self.fs.time.sum(axis=(1, 2)), 0.0)

    def _tokens(self):
        """Decode the tokens in order."""
        env, L = self.env, self.L
        for tok in range(self.T):
            t0 = env.now
            # read-ahead stages: one background batch, sharing the device with the dependent reads
            bg = self.fs.background[tok]
            bg_ev = env.timeout(bg + self.fs.time[tok].sum()) if bg > 0 else None
            if bg_ev is not None:
                self._note("prefetched reads", "flash (prefetch)", t0, bg, tok)
            for layer in range(L):
                yield from self._layer(tok, layer)
            yield env.timeout(self.t_head)
            self._note("lm head", "dram+compute", env.now - self.t_head, self.t_head, tok)
            if bg_ev is not None:
                yield bg_ev
            self.n_events += 3 * L + 1 + (bg_ev is not None)
            self.latency[tok] = env.now - t0

    def _layer(self, tok: int, layer: int):
        env = self.env
        a = env.now
        yield env.timeout(self.t_attn[tok])
        self._note(f"attention L{layer}", "dram+compute", a, self.t_attn[tok], tok)
        for s_i, label in ((0, "up/gate"), (1, "down")):
            a = env.now
            if (tok, layer, s_i) in self.fs.fine:
                yield env.process(self._stage_per_request(tok, layer, s_i))
            else:
                yield env.timeout(self.stage_dur[tok, layer, s_i])
            if self.events is not None and tok < self.chrome_tokens:
                f = self.fs.time[tok, layer, s_i]
                self._note(f"flash L{layer} {label}", "flash", a, f, tok)
                self._note(f"cached L{layer} {label}", "dram+compute", a if self.cfg.overlap_io else a + f,
                           self.t_hit[tok, layer, s_i], tok)
                self._note(f"landed L{layer} {label}", "dram+compute", env.now - self.t_miss[tok, layer, s_i],
                           self.t_miss[tok, layer, s_i], tok)

    def _stage_per_request(self, tok: int, layer: int, s_i: int):
        """Fine mode: the stage's reads as one SimPy process per request, beside the cached path."""
        env = self.env
        t0 = env.now
        sizes, seq = self.fs.fine[(tok, layer, s_i)]
        flash = self.models.flash.fine_process(env, sizes, seq)
        if not self.cfg.overlap_io:
            yield flash
        yield env.timeout(self.t_hit[tok, layer, s_i])
        yield flash
        yield env.timeout(self.t_miss[tok, layer, s_i])
        self.fs.time[tok, layer, s_i] = flash.value   # the per-request simulation's own flash time
        self.n_events += len(sizes)
        return env.now - t0

    # ------------------------------------------------------------------ the result
    def _result(self, latency, busy_flash, busy_dc, n_events) -> EngineResult:
        T, L = self.T, self.L
        dram = self.models.dram
        dram_bytes = self.hit_b.sum(axis=(1, 2)) + (self.miss_b.sum(axis=(1, 2)) if self.miss_via_dram else 0.0) \
            + L * self.attn_b + self.head_b
        energy = None
        if self.models.flash_energy is not None and dram.read_energy_per_byte is not None:
            energy = self.fs.bytes * self.models.flash_energy + dram_bytes * dram.read_energy_per_byte
        stall = np.maximum(latency - busy_dc, 0.0)
        dram_time = np.broadcast_to(self._rt(dram_bytes), (T,)).astype(float)
        compute_time = np.broadcast_to(self._ct(self.flops.sum(axis=(1, 2)) + L * self.attn_f + self.head_f),
                                       (T,)).astype(float)
        result = EngineResult(self.models.name, self.cfg.mode, latency, busy_flash, dram_time, compute_time, stall,
                              self.fs.bytes, self.fs.requests, dram_bytes, energy, self.log.warmup, self.fs.histogram,
                              events=n_events)
        result.extra.update(footprint_and_baselines(self.log, self.layout, self.models, self.shape, self.t_attn,
                                                    self.t_head, self.positions, self.miss_via_dram, result))
        return result
