"""Geometries and static-parameter metadata of models too large to trace here, and 4-bit formats.

Every number comes from the model's published Hugging Face ``config.json`` (named per preset).
Parameter counts follow ``traces.models``: ``attn_params_per_layer`` is every non-MLP parameter of
a decoder layer (q, k, v, o projections, the two RMSNorm weights, none of these models has biases)
plus the final norm divided by the layer count; ``embed_params`` and ``lm_head_params`` are
``vocab_size x d_model`` (all four keep a separate LM head: ``tie_word_embeddings`` false).
The engine uses these for static weights and the KV cache.

Weight formats (llama.cpp block layouts, bytes per weight = block bytes / block weights):
Q4_0 18 B / 32 = 0.5625; Q4_1 20 B / 32 = 0.625; Q4_K 144 B / 256 = 0.5625; Q5_K 176 B / 256 =
0.6875; Q8_0 34 B / 32 = 1.0625; F16 2. A preset charges its format to the MLP and to the static
weights alike; real "Q4_K_M" files keep some tensors (often the LM head, half the down
projections) in Q6_K, which this does not model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.errors import DipsimError

WEIGHT_FORMATS: dict[str, float] = {"Q4_0": 18 / 32, "Q4_1": 20 / 32, "Q4_K": 144 / 256, "Q5_K": 176 / 256,
                                    "Q8_0": 34 / 32, "F16": 2.0}


@dataclass(frozen=True)
class Preset:
    name: str
    model: str               # the model the geometry is taken from
    source: str              # where the numbers come from
    architecture: str
    n_layers: int
    d_model: int
    d_ff: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    weight_format: str = "Q4_K"
    #: tokens of context the run keeps a KV cache for: the Phi-3 4k models' window, and a common
    #: on-device setting for the others (their configurations allow 8k and 32k)
    context: int = 4096

    @property
    def attn_params_per_layer(self) -> int:
        q_o = 2 * self.d_model * self.n_heads * self.head_dim
        k_v = 2 * self.d_model * self.n_kv_heads * self.head_dim
        norms = 2 * self.d_model
        return q_o + k_v + norms + round(self.d_model / self.n_layers)   # + the final norm's share

    def meta(self, weight_format: str | float | None = None) -> dict[str, Any]:
        """Trace metadata for this geometry (the fields ``traces.format`` requires and the engine reads)."""
        fmt, bpw = weight_format_bytes(weight_format if weight_format is not None else self.weight_format)
        return {"model": f"synth:{self.name}", "architecture": self.architecture, "activation": "silu",
                "mlp_kind": "gate_up_down", "n_layers": self.n_layers, "d_model": self.d_model, "d_ff": self.d_ff,
                "weight_dtype": fmt, "bytes_per_weight": bpw, "static_bytes_per_weight": bpw,
                "attn_params_per_layer": self.attn_params_per_layer, "embed_params": self.vocab_size * self.d_model,
                "lm_head_params": self.vocab_size * self.d_model, "tied_lm_head": False, "n_heads": self.n_heads,
                "n_kv_heads": self.n_kv_heads, "head_dim": self.head_dim, "vocab_size": self.vocab_size,
                "context": self.context, "geometry_source": f"{self.model}: {self.source}"}


PRESETS: dict[str, Preset] = {p.name: p for p in (
    # huggingface.co/microsoft/Phi-3-medium-4k-instruct/blob/main/config.json: hidden 5120, intermediate 17920,
    # 40 layers, 40 heads, 10 KV heads, vocab 32064 (the Llama-2 tokenizer + 64). 100352 is Phi-4's vocabulary
    # (same 40 x 5120 x 17920 geometry) and Phi-3-small's, not Phi-3-medium's.
    Preset("phi3-medium", "Phi-3-medium-4k-instruct", "huggingface.co/microsoft/Phi-3-medium-4k-instruct config.json",
           "phi3", 40, 5120, 17920, 40, 10, 128, 32064),
    # huggingface.co/microsoft/Phi-3-mini-4k-instruct/blob/main/config.json: hidden 3072, intermediate 8192,
    # 32 layers, 32 heads, 32 KV heads (no GQA), vocab 32064
    Preset("phi3-mini", "Phi-3-mini-4k-instruct", "huggingface.co/microsoft/Phi-3-mini-4k-instruct config.json",
           "phi3", 32, 3072, 8192, 32, 32, 96, 32064),
    # huggingface.co/meta-llama/Meta-Llama-3-8B/blob/main/config.json: hidden 4096, intermediate 14336,
    # 32 layers, 32 heads, 8 KV heads, vocab 128256
    Preset("llama3-8b", "Meta-Llama-3-8B", "huggingface.co/meta-llama/Meta-Llama-3-8B config.json",
           "llama", 32, 4096, 14336, 32, 8, 128, 128256),
    # huggingface.co/mistralai/Mistral-7B-v0.1/blob/main/config.json: hidden 4096, intermediate 14336,
    # 32 layers, 32 heads, 8 KV heads, vocab 32000
    Preset("mistral-7b", "Mistral-7B-v0.1", "huggingface.co/mistralai/Mistral-7B-v0.1 config.json",
           "mistral", 32, 4096, 14336, 32, 8, 128, 32000),
)}


def get(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise DipsimError(f"--like {name!r}: unknown model; allowed: {', '.join(PRESETS)}") from None


def weight_format_bytes(fmt: str | float) -> tuple[str, float]:
    """``(name, bytes per weight)`` of a format name (case-insensitive) or a positive number of bytes."""
    if isinstance(fmt, (int, float)) and not isinstance(fmt, bool):
        value = float(fmt)
    else:
        text = str(fmt).strip()
        for name, bpw in WEIGHT_FORMATS.items():
            if text.upper() == name:
                return name, bpw
        try:
            value = float(text)
        except ValueError:
            raise DipsimError(f"--weight-format {fmt!r}: unknown format; allowed: {', '.join(WEIGHT_FORMATS)} "
                              f"or bytes per weight as a number") from None
    if not 0 < value <= 8:
        raise DipsimError(f"--weight-format {fmt!r}: bytes per weight must be in (0, 8]")
    return f"{value:g}B", value
