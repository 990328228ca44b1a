"""Activation traces of real models: capture (torch, imported lazily), file format, loading.

    import traces
    t = traces.load("t.safetensors")        # checked, memory-mapped
    t.n_layers, t.d_model, t.d_ff, t.n_tokens
    t.x(layer)   # [n_tokens, d_model]  MLP input (what W_up / W_gate see)
    t.h(layer)   # [n_tokens, d_ff]     act(W_gate x) * (W_up x) (what W_down sees)
    t.meta       # model, architecture, activation, dims, weight dtype, corpus digest, ...
"""
from ._version import __version__
from common.errors import DipsimError
from .format import Trace, load
from .writer import TraceWriter, save
from .capture import capture  # noqa: E402  (the function shadows its module's name on purpose; torch loads lazily)

__all__ = ["__version__", "DipsimError", "Trace", "TraceWriter", "load", "save", "capture"]
