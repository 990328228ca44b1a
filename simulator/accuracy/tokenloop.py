"""The closed loop, token by token: the reference the layer-wise loop is checked against.

Every configuration is a row of one batch, all over the same token sequence (identical lengths, no
padding, explicit position ids). Row 0 is the dense model: the reference for KL and top-1, and the
row of every configuration whose masking prunes nothing. The prompt (position 0 -- the prefix token,
or the text's first token without one -- and the prefill text tokens; ``traces.prefix``) runs
densely in one parallel forward; then each later token runs with the KV cache, masked, and steps
the caches:

* up/gate group(s): ``scores = |x|`` of the MLP input, ``m = policy.select(scores, resident, k)`` for
  that one layer, and the MLP computes with ``x * m`` (separate up and gate masks go to the inputs
  of ``up_proj`` / ``gate_proj``; Phi-3's fused ``gate_up_proj`` is recomputed from both halves);
* down group: ``scores = |h|`` of this row's GLU output (from the masked x), and W_down sees
  ``h * m``;
* neuron group (``cats``, ``dejavu`` with ``oracle``): ``scores = |act(W_gate x)|`` (from a hook on the
  gate projection) or ``|h|``, and W_down sees ``h * m`` -- a neuron left out contributes nothing,
  as if its gate row, up row and down column were never read.

Residency used for token t is the cache state after token t-1: every (config, group) has one cache
over all L layers, layer l selects with ``cache.resident[l:l+1]``, and once the whole token has run
the cache steps once with the token's full ``[L, N]`` mask. By default the linear layers run row by
row while decoding (``batch_invariant``): a batched GEMM picks its blocking by batch size, so a row's
last bits would depend on the batch, and a top-k choice turns a last-bit difference into a different
trajectory. This loop costs about a second of CPU per token for SmolLM2; the layer-wise loop
(``accuracy.layerwise``) computes the same closed loop at prefill speed.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..replay import AccessLog, GroupLog, new_cache
from .metrics import LoopResult
from .model import first_arg, fused_gate_up, install_hooks, replace_first


class TokenConfigRun:
    """The masking/cache state of one configuration in the closed loop, and its access log."""

    def __init__(self, cfg: dict[str, Any], setup, meta: dict[str, Any], n_tokens: int, row: int,
                 calib: dict[str, np.ndarray] | None):
        self.cfg, self.setup, self.meta, self.row = cfg, setup, meta, row
        L = int(meta["n_layers"])
        self.L, self.T = L, n_tokens
        self.groups = setup.groups
        self.ks = {g.name: g.k() for g in self.groups}
        # per layer, the policy for that one layer (random's per-layer generators, calibrated slices)
        self.row_policies = {g.name: [setup.policies[g.name].rows(layer, layer + 1) for layer in range(L)]
                             for g in self.groups if g.pruned}
        self.caches = {g.name: new_cache(setup, g, L, calib) for g in self.groups}
        self.masks = {g.name: np.ones((L, g.n_columns), dtype=bool) for g in self.groups}
        self.x_groups = [g for g in self.groups if g.kind == "x" and g.pruned]
        self.h_groups = [g for g in self.groups if g.kind == "h" and g.pruned]
        self.g_groups = [g for g in self.groups if g.kind == "g" and g.pruned]   # neurons by act(W_gate x)
        self.split = any(g.name == "up" for g in self.groups)
        self.sel = {g.name: np.zeros((n_tokens, L), np.int32) for g in self.groups}
        self.hit = {g.name: np.zeros((n_tokens, L), np.int32) for g in self.groups}
        self.bits = {g.name: np.zeros((n_tokens, L, (g.n_columns + 7) // 8), np.uint8) for g in self.groups}
        self.mask_log: dict[str, np.ndarray] = {}   # [T, L, N] per group, filled with details

    def keep_masks(self) -> None:
        self.mask_log = {g.name: np.zeros((self.T, self.L, g.n_columns), bool) for g in self.groups}

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
            if self.mask_log:
                self.mask_log[g.name][t] = mask

    def access_log(self, meta: dict[str, Any], warmup: int, seconds: float):
        logs = {g.name: GroupLog(g.name, g.n_columns, g.bytes_per_column, self.setup.capacities[g.name],
                                 self.ks[g.name], self.sel[g.name], self.hit[g.name], self.bits[g.name], g.parts)
                for g in self.groups}
        return AccessLog(dict(self.cfg), meta, warmup, logs, seconds, {"mlp_bytes": self.setup.mlp_bytes})


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


class _TokenHooks:
    """Forward hooks that mask every batch row by its configuration, at the last position (the
    token being decoded); ``state`` says whether decoding is on and which token it is."""

    def __init__(self, lm, runs: list[TokenConfigRun], n_rows: int, T: int, details: bool, batch_invariant: bool):
        L, dm, dff = lm.info.n_layers, lm.info.d_model, lm.info.d_ff
        self.lm, self.batch_invariant = lm, batch_invariant
        masked = [r for r in runs if r.row > 0]
        self.split = any(r.split for r in masked)
        self.state = {"active": False, "t": 0}
        self.rec_x = np.zeros((n_rows, L, T, dm), np.float32) if details else None
        self.rec_h = np.zeros((n_rows, L, T, dff), np.float32) if details else None
        self.rec_g = np.zeros((n_rows, L, T, dff), np.float32) if details else None
        # float masks per layer; rows of unmasked configurations stay 1.0
        self.m_up = [np.ones((n_rows, dm), np.float32) for _ in range(L)]
        self.m_gate = [np.ones((n_rows, dm), np.float32) for _ in range(L)] if self.split else self.m_up
        self.m_down = [np.ones((n_rows, dff), np.float32) for _ in range(L)]
        self.x_runs = [r for r in masked if r.x_groups]
        self.h_runs = [r for r in masked if r.h_groups]
        self.g_runs = [r for r in masked if r.g_groups]
        self.select_seconds = 0.0

    def _select(self, i, a, rec, runs, assign) -> bool:
        """Record the last position's activations ``a`` (when asked) and let every masked row
        choose its columns from their magnitudes; False when no row masks here."""
        if rec is not None:
            rec[:, i, self.state["t"]] = a[:, -1, :].numpy()
        if not runs:
            return False
        t0 = time.perf_counter()
        scores = a[:, -1, :].abs().float().numpy()   # float32, as in the layer-wise loop
        for r in runs:
            assign(r, scores[r.row])
        self.select_seconds += time.perf_counter() - t0
        return True

    def mlp_hook(self, i):
        import torch

        def assign(r, scores):
            for g in r.x_groups:
                m = r.select(g, i, scores)
                if g.name in ("upgate", "up"):
                    self.m_up[i][r.row] = m
                if g.name in ("upgate", "gate"):
                    self.m_gate[i][r.row] = m

        def hook(mod, args, kwargs):
            if not self.state["active"]:
                return None
            x = first_arg(args, kwargs)
            if not self._select(i, x, self.rec_x, self.x_runs, assign) or self.split:
                return None  # nothing masked here, or the projection hooks apply the two masks
            return replace_first(args, kwargs, x * torch.from_numpy(self.m_up[i])[:, None, :])
        return hook

    def proj_hook(self, i, masks):
        import torch

        def hook(mod, args, kwargs):
            if not self.state["active"]:
                return None
            x = first_arg(args, kwargs)
            return replace_first(args, kwargs, x * torch.from_numpy(masks[i])[:, None, :])
        return hook

    def fused_hook(self, i):
        """Phi-3 with separate up and gate masks: the fused projection's output is recomputed from
        the two masked inputs (its own forward ran on the unmasked x; simple, at twice the cost)."""
        import torch

        def hook(mod, args, kwargs, out):
            if not self.state["active"]:
                return None
            return fused_gate_up(mod, first_arg(args, kwargs), torch.from_numpy(self.m_gate[i])[:, None, :],
                                 torch.from_numpy(self.m_up[i])[:, None, :],
                                 _rowwise_linear if self.batch_invariant else None)
        return hook

    def down_hook(self, i):
        import torch

        def assign(r, scores):
            for g in r.h_groups:
                self.m_down[i][r.row] = r.select(g, i, scores)

        def hook(mod, args, kwargs):
            if not self.state["active"]:
                return None
            h = first_arg(args, kwargs)
            if not self._select(i, h, self.rec_h, self.h_runs, assign) and not self.g_runs:
                return None   # (neurons chosen by the gate activation were chosen in gate_hook)
            return replace_first(args, kwargs, h * torch.from_numpy(self.m_down[i])[:, None, :])
        return hook

    def gate_hook(self, i):
        """Neurons chosen by the gate activation act(W_gate x) (cats): their mask goes to h, as the
        down group's does (a neuron left out contributes nothing: h_i = 0)."""
        def assign(r, scores):
            for g in r.g_groups:
                self.m_down[i][r.row] = r.select(g, i, scores)

        def fn(a):
            if self.state["active"] and (self.g_runs or self.rec_g is not None):
                self._select(i, a, self.rec_g, self.g_runs, assign)
        return fn

    def install(self) -> list:
        from traces.capture import register_gate_hook

        handles = install_hooks(self.lm, self, self.split)
        if self.g_runs or self.rec_g is not None:
            handles += [register_gate_hook(mlp, self.gate_hook(i)) for i, mlp in enumerate(self.lm.mlps)]
        return handles


def closed_loop(lm, seq: list[int], runs: list[TokenConfigRun], n_rows: int, n_pre: int, *, progress: bool = False,
                details: bool = False, batch_invariant: bool = True) -> LoopResult:
    """Run ``seq`` through the model with ``n_rows`` batch rows (row 0 dense), masking each row by the
    configurations in ``runs`` and stepping their caches once per decode token; see the module doc.

    With ``details`` the result also holds every row's logits of the scored positions and, in
    ``extra["x"]`` / ``extra["h"]`` / ``extra["g"]`` (``[rows, L, T, N]``), the activations each row's
    policy scored: the MLP input before its mask, the GLU output before its mask and the gate activation. ``batch_invariant``: decode
    with row-by-row linear layers, so that each row's numbers do not depend on the batch (see
    :func:`_rowwise_linear`); False uses the batched GEMMs (faster, but a configuration's result
    then depends on the other rows at the level of float rounding, amplified by top-k choices).
    """
    if n_pre < 1:
        raise ValueError("position 0, the attention sink, always runs densely: n_pre must be >= 1 (traces.prefix)")
    if details:
        for r in runs:
            r.keep_masks()
    hooks = _TokenHooks(lm, runs, n_rows, len(seq) - n_pre, details, batch_invariant)
    handles = hooks.install()
    try:
        res = _run(lm, seq, runs, n_rows, n_pre, hooks.state, progress, details, batch_invariant)
    finally:
        for h in handles:
            h.remove()
    res.extra["select_seconds"] = hooks.select_seconds
    if details:
        res.extra.update(x=hooks.rec_x, h=hooks.rec_h, g=hooks.rec_g)
    return res


def _run(lm, seq, runs, B, n_pre, state, progress, details, batch_invariant) -> LoopResult:
    import torch

    from common.progress import progress_bar as _bar

    n = len(seq)
    model = lm.model
    ckw = _cache_kwarg(model)
    first_target = n_pre       # the first prediction scored is the prompt's last position's
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
    bar = _bar(n - n_pre, progress, f"eval {B} row{'s' if B > 1 else ''}")
    try:
        with torch.inference_mode():
            # the dense prompt: batch 1 (the same computation for any batch), then B copies
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
    return LoopResult(nll, kl, top1, time.perf_counter() - t0, logits_keep)
