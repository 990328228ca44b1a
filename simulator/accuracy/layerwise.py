"""The closed loop, layer by layer: the whole text through each layer at prefill speed, exactly.

The cache state of layer l at token t depends only on layer l's masks of the tokens before t, and
those only on layer l's inputs, which causal attention computes from layer l-1's outputs of tokens
up to t. So with teacher forcing (the text's own tokens as inputs, as in the token-by-token loop)
one configuration's closed loop is a single parallel forward of the whole sequence in which every
gated MLP, seeing all positions of its layer at once, does:

* up/gate group(s): ``|x|`` of every decode position -> the configuration's masking policy and
  caches stepped through the tokens in order (``replay.GroupRun.run_layer``: the same objects and
  compiled loops replay uses) -> ``x * mask`` (with separate up and gate keeps, each projection
  gets its own masked input; Phi-3's fused ``gate_up_proj`` is recomputed from the two);
* down group: ``|h|`` of the GLU output computed from the masked x -> the same -> ``h * mask``;
* neuron group (``cats``, ``dejavu``, ``powerinfer``): ``|act(W_gate x)|`` (a hook on the gate
  projection), ``|h|`` or the look-ahead predictor's logits -> the same -> ``h * mask``: a neuron left
  out contributes nothing, exactly as if its gate row, up row and down column were never read.

Prompt positions (position 0 -- the prefix token, or the text's first token without one -- and the
``prefill`` text tokens; ``traces.prefix.dense_positions``) run densely and step no cache, as in the
token loop and as ``traces.capture`` leaves them out of a trace. Each configuration runs its own forward (batch 1): its figures then do not depend on which
other configurations share the run. Configurations that prune nothing are the dense forward itself
(their caches only need the all-ones masks). Rows are scored against the dense row afterwards, in
chunks (``metrics.score_hidden``).

With float64 weights both loops choose identical masks at every token, layer and group (a test);
in float32 the parallel and the incremental attention round differently, and the first near-tied
top-k choice sends the two on equally valid but different trajectories (see docs/concepts.md, Accuracy).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..replay import AccessLog, GroupRun, ReplaySetup, access_log
from .metrics import LoopResult, score_hidden
from .model import decoder, first_arg, fused_gate_up, install_hooks, replace_first


@dataclass
class ConfigRun:
    """One configuration in the closed loop: its replay setup, the runs of its groups, its row."""

    cfg: dict[str, Any]
    setup: ReplaySetup
    runs: list[GroupRun]
    row: int = 0                        # 0: prunes nothing, so the dense forward is its forward
    masks: dict[str, np.ndarray] = field(default_factory=dict)   # [T, L, N] per group, with details

    @property
    def prunes(self) -> bool:   # or runs other weights (simulator.methods): needs its own forward
        return any(r.group.pruned for r in self.runs) or bool(self.cfg.get("variant") or self.cfg.get("adapter"))

    @property
    def split(self) -> bool:
        return any(r.group.name == "up" for r in self.runs)

    def access_log(self, meta: dict[str, Any], warmup: int, seconds: float) -> AccessLog:
        return access_log(self.runs, dict(self.cfg), meta, warmup, seconds, self.setup.mlp_bytes)


class _Masker:
    """Forward hooks that mask one configuration's gated MLPs over all positions at once.

    The positions that run masked are ``self.sel`` (``[batch, positions]`` bool; by default every
    position of a one-row batch from ``n_pre`` on), taken in row-major order -- rows are consecutive
    questions of the MMLU task -- and recorded from ``self.offset`` on in the runs' ``[T, L]`` records.
    ``self.segments`` (masked positions per row) with ``self.fresh`` (a group's run -> a new cache)
    step every row with a fresh cache instead of carrying one cache through all of them."""

    def __init__(self, lm, n_pre: int, details: bool):
        self.lm, self.n_pre, self.details = lm, n_pre, details
        self.run: ConfigRun | None = None
        self.m_up: dict[int, Any] = {}
        self.m_gate: dict[int, Any] = {}
        self.select_seconds = 0.0
        self.rec_x = self.rec_h = self.rec_g = None
        self.g_masks: dict[str, np.ndarray] = {}   # neurons chosen by the gate activation, for down_hook
        self.on_layer = lambda: None
        self.prev_x: dict[int, np.ndarray] = {}   # MLP inputs for look-ahead policies (score_source "prev_x")
        self.look_ahead = False
        self.sel = None            # None: one row, positions n_pre: on
        self.offset = 0
        self.segments: list[int] | None = None
        self.fresh = None

    def start(self, run: ConfigRun) -> None:
        self.run = run
        self.prev_x = {}
        self.look_ahead = any(r.group.pruned and r.policy.score_source(r.group.kind) == "prev_x" for r in run.runs)
        if self.details:
            info = self.lm.info
            T = run.runs[0].selected.shape[0]
            self.rec_x = np.zeros((info.n_layers, T, info.d_model), np.float32)
            self.rec_h = np.zeros((info.n_layers, T, info.d_ff), np.float32)
            self.rec_g = np.zeros((info.n_layers, T, info.d_ff), np.float32)
            run.masks = {r.group.name: np.zeros((T, info.n_layers, r.group.n_columns), bool) for r in run.runs}

    def _acts(self, a):
        return a[0, self.n_pre:] if self.sel is None else a[self.sel]

    def _full(self, mask: np.ndarray, like):
        """A multiplier shaped like ``like``: True at the dense positions, the masks at the masked ones.
        A bool array filled in numpy: multiplying by it is exact, and it costs a third less than a
        multiplier of the model's dtype filled in torch (34 against 52 ms for a [10, 104, 4864] batch
        in float32, 40 against 50 in bfloat16, one thread)."""
        import torch

        full = np.ones(tuple(like.shape), bool)
        if self.sel is None:
            full[0, self.n_pre:] = mask
        else:
            full[self.sel.numpy()] = mask
        return torch.from_numpy(full)

    def _step(self, r, i: int, scores: np.ndarray | None, n: int) -> np.ndarray:
        if self.segments is None:
            return r.run_layer(i, scores, self.offset, n)
        out, at = [], 0
        for m in self.segments:    # each row from a fresh cache
            part = None if scores is None else scores[at:at + m]
            out.append(r.run_layer(i, part, self.offset + at, m, cache=self.fresh(r)))
            at += m
        return np.concatenate(out) if out else np.zeros((0, r.group.n_columns), bool)

    def _select(self, i: int, a, kind: str) -> dict[str, np.ndarray]:
        """Run every group of kind ``kind`` of the current configuration through layer ``i``."""
        acts = self._acts(a).float()
        n = acts.shape[0]
        if self.details:
            {"x": self.rec_x, "h": self.rec_h, "g": self.rec_g}[kind][i, self.offset:self.offset + n] = acts.numpy()
        if self.look_ahead and kind == "x":
            self.prev_x = {i: acts.numpy().copy(), **{j: v for j, v in self.prev_x.items() if j == i - 1}}
        scores = acts.abs().numpy()
        t0 = time.perf_counter()
        masks = {r.group.name: self._step(r, i, self._scores(r, i, scores), n)
                 for r in self.run.runs if r.group.kind == kind}
        self.select_seconds += time.perf_counter() - t0
        if self.details:
            for name, m in masks.items():
                self.run.masks[name][self.offset:self.offset + n, i] = m
        return masks

    def _scores(self, r, i: int, own: np.ndarray) -> np.ndarray:
        if r.group.pruned and r.policy.score_source(r.group.kind) == "prev_x":
            return r.policy.scores_from(i, r.group.kind, self.prev_x[max(i - 1, 0)])
        return own

    def mlp_hook(self, i: int):
        def hook(mod, args, kwargs):
            x = first_arg(args, kwargs)
            masks = self._select(i, x, "x")
            if self.run.split:   # the projections' own hooks apply the two masks
                self.m_up[i], self.m_gate[i] = self._full(masks["up"], x), self._full(masks["gate"], x)
                return None
            if not any(r.group.pruned for r in self.run.runs if r.group.kind == "x"):
                return None
            return replace_first(args, kwargs, x * self._full(masks["upgate"], x))
        return hook

    def proj_hook(self, i: int, masks: dict[int, Any]):
        def hook(mod, args, kwargs):
            if not self.run.split:
                return None
            return replace_first(args, kwargs, first_arg(args, kwargs) * masks[i])
        return hook

    def fused_hook(self, i: int):
        """Phi-3 with separate up and gate masks: the fused projection's output recomputed from the two
        masked inputs (its own forward ran on the unmasked x)."""
        def hook(mod, args, kwargs, out):
            if not self.run.split:
                return None
            return fused_gate_up(mod, first_arg(args, kwargs), self.m_gate[i], self.m_up[i])
        return hook

    def gate_fn(self, i: int):
        """Neurons chosen by the gate activation act(W_gate x) (``cats``), kept for ``down_hook``."""
        def fn(a):
            if self.run is not None and (self.details or any(r.group.kind == "g" for r in self.run.runs)):
                self.g_masks = self._select(i, a, "g")
        return fn

    def down_hook(self, i: int):
        def hook(mod, args, kwargs):
            h = first_arg(args, kwargs)
            masks = {**self._select(i, h, "h"), **self.g_masks}
            self.g_masks = {}
            self.on_layer()
            pruned = [r.group.name for r in self.run.runs if r.group.pruned and r.group.kind != "x"]
            if not pruned:
                return None
            return replace_first(args, kwargs, h * self._full(masks[pruned[0]], h))   # "down" or "neuron"
        return hook

    def install(self) -> list:
        from traces.capture import register_gate_hook

        return install_hooks(self.lm, self) + [register_gate_hook(mlp, self.gate_fn(i))
                                               for i, mlp in enumerate(self.lm.mlps)]


def layerwise(lm, seq: list[int], n_pre: int, runs: list[ConfigRun], dense_hidden, *, progress: bool = False,
              details: bool = False, dense_scores: dict | None = None) -> LoopResult:
    """The closed loop of every configuration in ``runs`` over ``seq`` (see the module doc).

    ``dense_hidden``: the final hidden states of the dense forward (``accuracy.model.dense_pass``),
    row 0 (``dense_scores``: its scores kept from an earlier run, ``metrics.score_hidden``).
    Configurations that prune are numbered rows 1, 2, ... in order (``run.row``). With
    ``details`` the result also holds the logits of the scored positions and, in ``extra``, every
    row's scored activations (``x``, ``h``, ``g``: ``[rows, L, T, N]``, before its masks).
    """
    import torch

    from ..methods.apply import applied
    from common.progress import progress_bar

    if n_pre < 1:
        raise ValueError("position 0, the attention sink, always runs densely: n_pre must be >= 1 (traces.prefix)")
    L = lm.info.n_layers
    masked = [r for r in runs if r.prunes]
    for n, r in enumerate(masked, start=1):
        r.row = n
    t0 = time.perf_counter()
    masker = _Masker(lm, n_pre, details)
    bar = progress_bar(len(masked) * L, progress, f"eval {len(masked)} configuration{'s' * (len(masked) != 1)}",
                       unit="layer")
    masker.on_layer = lambda: bar.update(1)
    hidden = [dense_hidden]
    rec: dict[str, list] = {"x": [None], "h": [None], "g": [None]}   # row-indexed; row 0 is the dense trace
    handles = masker.install()
    try:
        with torch.inference_mode():
            for run in masked:
                masker.start(run)
                with applied(lm, run.cfg):   # the configuration's variant / adapter, if it names one
                    out = decoder(lm.model)(input_ids=torch.tensor([seq]), use_cache=False)
                hidden.append(out.last_hidden_state[0])
                if details:
                    for kind, arr in (("x", masker.rec_x), ("h", masker.rec_h), ("g", masker.rec_g)):
                        rec[kind].append(arr)
    finally:
        for h in handles:
            h.remove()
        bar.close()
    t_sel = time.perf_counter()
    for run in runs:          # configurations that prune nothing: every column, every token
        if not run.prunes:
            T = run.runs[0].selected.shape[0]
            for g in run.runs:
                for layer in range(L):
                    g.run_layer(layer, None)
            if details:
                run.masks = {g.group.name: np.ones((T, L, g.group.n_columns), bool) for g in run.runs}
    select_seconds = masker.select_seconds + time.perf_counter() - t_sel
    nll, kl, top1, logits = score_hidden(lm.model, hidden, np.asarray(seq[n_pre:]), n_pre - 1,
                                         keep_logits=details, dense=dense_scores)
    res = LoopResult(nll, kl, top1, time.perf_counter() - t0, logits, {"select_seconds": select_seconds})
    if details:
        res.extra.update(x=rec["x"], h=rec["h"], g=rec["g"])
    return res
