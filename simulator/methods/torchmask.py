"""DIP's masks inside a differentiable torch forward, for training (LoRA recovery).

The simulator's loops (``simulator.accuracy``) choose masks in numpy, under ``inference_mode``, with
caches; training needs the same masks in an autograd graph. Per token and layer (Federici et al.,
MLSys 2025):

    x -> x * m_x,   m_x = top-k(|x|)   (k = keep_up * d_model): the input of W_up and W_gate
    h -> h * m_h,   m_h = top-k(|h|)   (k = keep_down * d_ff):  the input of W_down

The masks are recomputed every forward from the current activations and treated as constants
(computed without gradient): the gradient flows through the kept entries and is zero for the dropped
ones -- exactly the derivative of ``x * m`` at fixed ``m``, the usual straight-through treatment of a
top-k gate. Ties may break differently from the simulator's (lowest index first); with float inputs
ties are rare and the masks otherwise agree (a test compares them).
"""
from __future__ import annotations

from typing import Any

from common.errors import DipsimError


def topk_mask(a, k: int):
    """Float mask of the ``k`` largest ``|a|`` along the last dimension (no gradient)."""
    import torch

    with torch.no_grad():
        n = a.shape[-1]
        if k >= n:
            return torch.ones_like(a)
        idx = a.abs().topk(k, dim=-1, sorted=False).indices
        return torch.zeros_like(a).scatter_(-1, idx, 1.0)


def keep_count(keep: Any, n: int, what: str) -> int:
    try:
        f = float(keep)
    except (TypeError, ValueError):
        raise DipsimError(f"{what} must be a number in (0, 1], got {keep!r}") from None
    if not 0.0 < f <= 1.0:
        raise DipsimError(f"{what} must be in (0, 1], got {f}")
    return max(1, int(round(f * n)))   # the same rounding as replay's Group.k()


class DIPMasks:
    """Forward pre-hooks masking every gated MLP's x and h by top-k magnitude; ``enabled`` switches
    them off (e.g. for the dense teacher's forward) without removing them.

        with DIPMasks(lm, keep_up=0.5, keep_down=0.5) as m: loss = ...; with m.off(): teacher = ...
    """

    def __init__(self, lm, keep_up: float = 0.5, keep_down: float = 0.5):
        self.lm = lm
        self.k_up = keep_count(keep_up, lm.info.d_model, "keep_up")
        self.k_down = keep_count(keep_down, lm.info.d_ff, "keep_down")
        self.enabled = True
        self.handles: list = []

    def _hook(self, k: int):
        def hook(mod, args, kwargs):
            if not self.enabled:
                return None
            if args:
                return (args[0] * topk_mask(args[0], k),) + tuple(args[1:]), kwargs
            name = next(iter(kwargs))
            return args, {**kwargs, name: kwargs[name] * topk_mask(kwargs[name], k)}
        return hook

    def __enter__(self) -> "DIPMasks":
        if self.lm.info.mlp_kind != "gate_up_down":
            raise DipsimError(f"DIP masks in training need separate gate_proj/up_proj; {self.lm.info.model} has "
                              f"{self.lm.info.mlp_kind}")
        for mlp in self.lm.mlps:
            self.handles.append(mlp.register_forward_pre_hook(self._hook(self.k_up), with_kwargs=True))
            self.handles.append(mlp.down_proj.register_forward_pre_hook(self._hook(self.k_down), with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def off(self) -> "_Off":
        return _Off(self)


class _Off:
    def __init__(self, owner):
        self.owner = owner

    def __enter__(self):
        self.prev, self.owner.enabled = self.owner.enabled, False

    def __exit__(self, *exc):
        self.owner.enabled = self.prev
