"""The prefix token: what runs before a text's first token, and which positions run densely.

Conventions differ between tools. A tokenizer either puts a token before every text (Gemma's
``<bos>``; SentencePiece Llamas) or not (SmolLM2, Qwen2.5: their GGUFs say
``tokenizer.ggml.add_bos_token = false``, and their tokenizers encode without one, as llama.cpp's
perplexity does); lm-eval's rolling log-likelihood puts one before every text anyway. The choice
moves the figures: Qwen2.5-0.5B's dense perplexity over 512 tokens of the default corpus is 12.30
as its tokenizer encodes the text and 16.10 with ``<|endoftext|>`` prepended (docs/how-to/models.md). So
every run that tokenizes a text takes the run parameter ``prefix_token``, declared here once:

* ``auto`` (default): the model's own convention, what its tokenizer puts before a text. For a GGUF
  its header's ``tokenizer.ggml.add_bos_token`` (with ``tokenizer.ggml.bos_token_id``), read
  without loading the model (``ggufkv``); for a local Hugging Face directory or a loaded model, the
  tokenizer's own encoding of a probe text with and without special tokens (its ``add_bos_token``
  or post-processor, whichever it uses);
* ``bos`` / ``eos``: the tokenizer's BOS / EOS token; ``none``: nothing; an integer: that token id.

It is resolved to a concrete token id or none (:func:`resolve`) before any model work, and the
resolved id is what traces and results record and what the accuracy store keys on.

Dense positions (:func:`dense_positions`). Position 0 of a sequence -- the prefix token, or without
one the text's first token -- is the attention sink: every later position attends to it heavily and
its activations are outliers. It always runs densely, like the prompt a device prefills before it
decodes; it steps no cache and is not recorded in a trace. So the dense prompt is the prefix token
(if any) and the ``prefill`` text tokens, and never fewer than one position; every position after it
runs masked, and the scored predictions are those of every token after the prompt. The rule is the
same in sequence positions whatever the convention, which keeps the dense perplexity equal to the
model's own loss-based perplexity on the sequence in both cases (the prediction of the first text
token from a prefix alone is scored; without a prefix there is none to score). With ``prefill`` of
one or more the masked and scored *text* positions are identical under every convention too; with
``prefill`` 0 a prefix adds the first text token to them.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import DipsimError
from common.params import param as _param
from common.params import says

CHOICES = ("auto", "bos", "eos", "none")
DEFAULT = "auto"
ALLOWED = "auto, bos, eos, none, or a token id (a whole number >= 0)"
HELP = ("token run before the text: auto (the model's own convention: its GGUF's tokenizer.ggml.add_bos_token, "
        "its tokenizer's add_bos_token), bos, eos, none, or a token id; position 0 always runs densely")
#: the probe text whose encoding with and without special tokens shows a tokenizer's own prefix
PROBE = "The cache holds the columns used most recently."
_GGUF_KEYS = ("tokenizer.ggml.add_bos_token", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
              "tokenizer.ggml.tokens")


@says(ALLOWED)
def check(v: Any, where: str) -> str | int:
    """A prefix_token value as written (``auto``, ``bos``, ``eos``, ``none``, a token id; None is
    ``none``), normalized; anything else is a one-line error naming ``where`` and the allowed values.
    Whether an id is in the vocabulary is checked when it is resolved against a model."""
    if v is None:
        return "none"
    if isinstance(v, str) and v.strip().lower() in CHOICES:
        return v.strip().lower()
    if isinstance(v, str) and v.strip().isdigit():
        v = int(v.strip())
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return int(v)
    shown = repr(v) if len(repr(v)) <= 60 else repr(v)[:57] + "..."
    raise DipsimError(f"{where}: unknown prefix token {shown}; allowed: {ALLOWED}")


def param() -> Any:
    """The ``prefix_token`` run parameter (a dataclass field of ``simulator.config``'s run classes)."""
    return _param(DEFAULT, check, HELP, metavar="auto|bos|eos|none|ID")


@dataclass(frozen=True)
class TokenFacts:
    """A model's special tokens as far as the prefix is concerned."""

    bos: int | None
    eos: int | None
    vocab_size: int
    own: int | None    # what the model's own convention puts before a text (None: nothing)
    how: str           # where ``own`` was learned


def facts(model: Any) -> TokenFacts:
    """The token facts of ``model``: a ``LoadedModel``, a ``ModelSource``, a name or path for
    ``traces.models.resolve`` (then found without loading the model's weights), or a bare tokenizer
    (its own encoding decides ``auto``)."""
    from .models import LoadedModel, ModelSource

    if callable(model) and hasattr(model, "convert_tokens_to_ids"):    # a tokenizer
        return _tokenizer_facts(model, len(model), "its tokenizer's own encoding")
    if isinstance(model, LoadedModel):
        src = model.source
        if src.kind == "gguf" and Path(src.path).is_file():
            return _gguf_facts(*_file_id(src.path))
        return _tokenizer_facts(model.tokenizer, model.info.vocab_size, "its tokenizer's own encoding")
    src = model if isinstance(model, ModelSource) else _named_source(str(model))
    if src.kind == "gguf":
        return _gguf_facts(*_file_id(src.path))
    return _hf_dir_facts(*_file_id(src.path))


def resolve(value: Any, model: Any, where: str = "prefix_token") -> int | None:
    """The concrete prefix of ``value`` for ``model`` (see :func:`facts`): a token id, or None."""
    v = check(value, where)
    if v == "none":
        return None
    f = facts(model)
    if v == "auto":
        return f.own
    if v in ("bos", "eos"):
        tid = f.bos if v == "bos" else f.eos
        if tid is None:
            raise DipsimError(f"{where}: model {_name(model)} has no {v.upper()} token; allowed: {ALLOWED}")
        return tid
    if not 0 <= v < f.vocab_size:
        raise DipsimError(f"{where}: token id {v} is outside model {_name(model)}'s vocabulary; allowed: auto, bos, "
                          f"eos, none, or a token id in 0..{f.vocab_size - 1}")
    return int(v)


def dense_positions(prefix: int | None, prefill: int) -> int:
    """How many leading positions of a sequence run densely: the prefix token (if any) and ``prefill``
    text tokens, and never fewer than one -- position 0 is the attention sink (module doc)."""
    return max(1, (prefix is not None) + int(prefill))


def sequence(prefix: int | None, ids: list[int]) -> list[int]:
    """``ids`` with the prefix token before them (if any)."""
    return ([prefix] if prefix is not None else []) + list(ids)


def label(prefix: int | None) -> str:
    """How results print a resolved prefix: ``none`` or the token id."""
    return "none" if prefix is None else str(prefix)


# ----------------------------------------------------------------------------------------- internals
def _name(model: Any) -> str:
    info = getattr(model, "info", None)
    if info is None and hasattr(model, "convert_tokens_to_ids"):
        return f"with tokenizer {getattr(model, 'name_or_path', '') or type(model).__name__}"
    return str(info.model) if info is not None else str(getattr(model, "name", model))


@functools.lru_cache(maxsize=16)
def _named_source(spec: str):
    """``traces.models.resolve`` once per process and name (sweeps key every point on it)."""
    from .models import resolve

    return resolve(spec)


def _file_id(path: Path) -> tuple[str, int, int]:
    """A path with its size and mtime: a cache key that sees a replaced file."""
    p = Path(path)
    st = p.stat() if p.is_file() else (p / "config.json").stat()
    return str(p), st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=16)
def _gguf_facts(path: str, size: int, mtime: int) -> TokenFacts:
    from .ggufkv import read_keys

    kv = read_keys(path, _GGUF_KEYS)
    bos, eos = kv.get("tokenizer.ggml.bos_token_id"), kv.get("tokenizer.ggml.eos_token_id")
    vocab = int(kv.get("tokenizer.ggml.tokens", 0))
    add = kv.get("tokenizer.ggml.add_bos_token")
    if add is None:   # the header does not say: what the tokenizer transformers builds from it does
        from .models import _quiet_transformers

        _quiet_transformers()
        from transformers import AutoTokenizer

        p = Path(path)
        tok = AutoTokenizer.from_pretrained(p.parent, gguf_file=p.name)
        return _tokenizer_facts(tok, vocab or len(tok), "its tokenizer's own encoding (the GGUF sets no "
                                                        "tokenizer.ggml.add_bos_token)")
    if add and bos is None:
        raise DipsimError(f"{path}: tokenizer.ggml.add_bos_token is true but the GGUF has no "
                          f"tokenizer.ggml.bos_token_id; give prefix_token explicitly")
    return TokenFacts(_opt_int(bos), _opt_int(eos), vocab, _opt_int(bos) if add else None,
                      f"GGUF tokenizer.ggml.add_bos_token = {str(bool(add)).lower()}")


@functools.lru_cache(maxsize=16)
def _hf_dir_facts(path: str, size: int, mtime: int) -> TokenFacts:
    from .models import _quiet_transformers, hf_config

    cfg = hf_config(Path(path))
    _quiet_transformers()
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as e:   # noqa: BLE001 -- a broken folder makes transformers raise almost anything
        raise DipsimError(f"{path}: cannot load its tokenizer ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    vocab = (cfg.get("text_config") or {}).get("vocab_size") or cfg.get("vocab_size") or len(tok)
    return _tokenizer_facts(tok, int(vocab), "its tokenizer's own encoding")


def _tokenizer_facts(tok, vocab_size: int, how: str) -> TokenFacts:
    """Facts from a tokenizer: the ids it puts before the probe text when it adds special tokens."""
    own = list(tok(PROBE)["input_ids"])
    plain = list(tok(PROBE, add_special_tokens=False)["input_ids"])
    starts = [k for k in range(len(own) - len(plain) + 1) if own[k:k + len(plain)] == plain]
    if not starts or starts[0] > 1:
        raise DipsimError(f"the tokenizer puts {own[:starts[0]] if starts else 'other tokens'} around a text; dipsim "
                          f"runs at most one prefix token: give prefix_token explicitly ({ALLOWED})")
    return TokenFacts(_opt_int(getattr(tok, "bos_token_id", None)), _opt_int(getattr(tok, "eos_token_id", None)),
                      int(vocab_size), own[0] if starts[0] == 1 else None, how)


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


__all__ = ["ALLOWED", "CHOICES", "DEFAULT", "HELP", "TokenFacts", "check", "dense_positions", "facts", "label", "param",
           "resolve", "sequence"]
