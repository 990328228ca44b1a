"""Torch plumbing shared by the closed loops: hooks' argument handling, the decoder stack without its
LM head, logits from final hidden states, and the dense pass that records the dense trace.

torch is imported inside functions only: ``import simulator.accuracy`` must not load it.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from traces.models import decoder  # noqa: F401  (re-exported: the loops find the decoder here)


def first_arg(args, kwargs):
    """The tensor a forward (pre-)hook sees first, passed positionally or by keyword."""
    return args[0] if args else next(iter(kwargs.values()))


def replace_first(args, kwargs, value):
    """``(args, kwargs)`` with the first argument replaced (what a pre-hook returns)."""
    if args:
        return (value,) + tuple(args[1:]), kwargs
    k = next(iter(kwargs))
    kwargs = dict(kwargs)
    kwargs[k] = value
    return args, kwargs


def install_hooks(lm, loop, split: bool = True) -> list:
    """Register a closed loop's hooks on every gated MLP of ``lm``, in this order, and return the
    handles: ``loop.mlp_hook(i)`` (pre-hook of the MLP, its input x), ``loop.down_hook(i)`` (pre-hook
    of ``down_proj``, h) and, with ``split``, the hooks applying separate up and gate masks:
    ``loop.fused_hook(i)`` (forward hook of a fused ``gate_up_proj``) or ``loop.proj_hook(i, masks)``
    (pre-hooks of ``up_proj`` and ``gate_proj``, with ``loop.m_up`` / ``loop.m_gate``)."""
    handles = []
    for i, mlp in enumerate(lm.mlps):
        handles.append(mlp.register_forward_pre_hook(loop.mlp_hook(i), with_kwargs=True))
        handles.append(mlp.down_proj.register_forward_pre_hook(loop.down_hook(i), with_kwargs=True))
        if not split:
            continue
        if hasattr(mlp, "gate_up_proj"):
            handles.append(mlp.gate_up_proj.register_forward_hook(loop.fused_hook(i), with_kwargs=True))
        else:
            handles.append(mlp.up_proj.register_forward_pre_hook(loop.proj_hook(i, loop.m_up), with_kwargs=True))
            handles.append(mlp.gate_proj.register_forward_pre_hook(loop.proj_hook(i, loop.m_gate), with_kwargs=True))
    return handles


def fused_gate_up(mod, x, m_gate, m_up, linear=None):
    """Phi-3's fused ``gate_up_proj`` output recomputed from two masked inputs ``x * m_gate`` and
    ``x * m_up`` (its own forward ran on the unmasked x): gate first, then up (``chunk(2)`` order).
    ``linear``: how a linear layer computes (default ``torch.nn.functional.linear``)."""
    import torch

    w, b = mod.weight, mod.bias
    dff = w.shape[0] // 2
    lin = linear or torch.nn.functional.linear
    gate = lin(x * m_gate, w[:dff], None if b is None else b[:dff])
    up = lin(x * m_up, w[dff:], None if b is None else b[dff:])
    return torch.cat([gate, up], dim=-1)


def text_config(model):
    return getattr(model.config, "text_config", None) or model.config


def head_logits(model, hidden):
    """Next-token logits from final hidden states, as the model's own forward computes them (LM head,
    then Gemma's final soft-capping where the configuration has it)."""
    import torch

    logits = model.get_output_embeddings()(hidden)
    cap = getattr(text_config(model), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def dense_pass(lm, seq: list[int], n_pre: int, meta: dict[str, Any], *, keep_hidden: bool = False,
               with_g: bool = True):
    """One parallel dense forward of ``seq``: x, h and (``with_g``) the gate activation g of every
    layer at positions ``n_pre:`` as an in-memory float32 :class:`traces.Trace` (what
    ``traces.capture`` records, one window), and with ``keep_hidden`` the final hidden states
    ``[len(seq), d_model]`` (the dense row of the closed loop)."""
    import torch

    from traces.format import Trace
    from traces.capture import register_gate_hook

    L, T = lm.info.n_layers, len(seq) - n_pre
    xs = np.empty((L, T, lm.info.d_model), np.float32)
    hs = np.empty((L, T, lm.info.d_ff), np.float32)
    gs = np.empty((L, T, lm.info.d_ff), np.float32) if with_g else None
    handles = []

    def put(buf, i):
        def hook(mod, args, kwargs):
            buf[i] = first_arg(args, kwargs)[0, n_pre:].float().numpy()
        return hook

    def put_g(i):
        def fn(a):
            gs[i] = a[0, n_pre:].float().numpy()
        return fn

    for i, mlp in enumerate(lm.mlps):
        handles.append(mlp.register_forward_pre_hook(put(xs, i), with_kwargs=True))
        handles.append(mlp.down_proj.register_forward_pre_hook(put(hs, i), with_kwargs=True))
        if with_g:
            handles.append(register_gate_hook(mlp, put_g(i)))
    try:
        with torch.inference_mode():
            out = decoder(lm.model)(input_ids=torch.tensor([seq]), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    trace = Trace.from_arrays(xs, hs, meta, gs)
    return (trace, out.last_hidden_state[0]) if keep_hidden else trace
