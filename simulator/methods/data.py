"""The split between evaluation text and the text methods learn from (calibration, training).

The accuracy loop (``simulator.accuracy.evaluate``, ``traces.capture``) reads the FIRST ``tokens``
tokens of the corpus. Every method here that looks at text -- SparseGPT's calibration, LoRA
training, the predictors' training capture -- reads only ``corpus.text[offset:]`` (default
``TRAIN_OFFSET`` = 200,000 characters, about 45 k SmolLM2 tokens into the 465 k-character default
corpus), starting at the first paragraph break after it. :func:`check_disjoint` proves for a given
tokenizer and evaluation length that the evaluated tokens end before that offset; every entry point
calls it, so a figure measured on the evaluation text never comes from a model that saw it.

torch is imported inside functions only.
"""
from __future__ import annotations

from typing import Any

from traces.corpus import Corpus, default_corpus
from traces.prefix import DEFAULT as PREFIX_DEFAULT
from common.errors import DipsimError

#: first character of the text methods may learn from; the evaluation text lies before it
TRAIN_OFFSET = 200_000
#: the longest evaluation anyone is expected to run (tokens); checked, not assumed
MAX_EVAL_TOKENS = 4096


def check_int(name: str, v: Any, lo: int) -> int:
    """``v`` as a whole-number argument of at least ``lo`` (a bool is not one), else a one-line error."""
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise DipsimError(f"{name} must be an integer >= {lo}, got {v!r}")
    return v


def training_start(corpus: Corpus, offset: int = TRAIN_OFFSET) -> int:
    """Character index where the learning text starts: the first paragraph break at or after ``offset``
    (so no sequence starts mid-word), or ``offset`` itself when there is none."""
    if not isinstance(offset, int) or not 0 < offset < len(corpus.text):
        raise DipsimError(f"offset must be an integer in 1..{len(corpus.text) - 1} (a character of corpus "
                          f"{corpus.name}), got {offset!r}")
    brk = corpus.text.find("\n\n", offset)
    return offset if brk < 0 else brk + 2


def eval_end_char(tokenizer, corpus: Corpus, eval_tokens: int) -> int:
    """Character index just past the last of the first ``eval_tokens`` tokens (what evaluation reads)."""
    from traces.capture import tokenize_prefix

    ids = tokenize_prefix(tokenizer, corpus, eval_tokens)
    chars = max(4096, eval_tokens * 16)
    while True:
        enc = tokenizer(corpus.text[:chars], add_special_tokens=False, return_offsets_mapping=True)
        if len(enc["input_ids"]) > eval_tokens or chars >= len(corpus.text):
            break
        chars *= 2
    if list(enc["input_ids"][:eval_tokens]) != list(ids):   # tokenization of a longer piece must agree
        raise DipsimError("the tokenizer splits the evaluation prefix differently in a longer text; "
                          "cannot locate its end")
    return int(enc["offset_mapping"][eval_tokens - 1][1])


def check_disjoint(tokenizer, corpus: Corpus, offset: int = TRAIN_OFFSET,
                   eval_tokens: int = MAX_EVAL_TOKENS) -> int:
    """Refuse a split whose learning text could overlap the first ``eval_tokens`` evaluated tokens;
    return the character where learning text starts."""
    start = training_start(corpus, offset)
    end = eval_end_char(tokenizer, corpus, eval_tokens)
    if end > start:
        raise DipsimError(f"offset {offset}: the first {eval_tokens} evaluation tokens of corpus {corpus.name} "
                          f"reach character {end}, past the learning text's start {start}; use a larger offset")
    return start


def shared_windows(tokenizer, corpus: Corpus, eval_tokens: int = 1024, offset: int = TRAIN_OFFSET,
                   width: int = 64, step: int = 16) -> float:
    """Share of the evaluation text's ``width``-character windows (every ``step`` characters) that also
    occur somewhere in the learning text. Disjoint positions are not disjoint content when a corpus
    repeats itself (CPython's pydoc topics quote some passages in two topics): this measures it.
    (Default corpus, SmolLM2: 0 of 284 windows for 1024 tokens; 9 of 1121 for 4096 tokens.)"""
    start = check_disjoint(tokenizer, corpus, offset, eval_tokens)
    ev = corpus.text[:eval_end_char(tokenizer, corpus, eval_tokens)]
    learn = corpus.text[start:]
    pos = range(0, max(len(ev) - width, 0) + 1, step)
    return sum(ev[i:i + width] in learn for i in pos) / max(len(pos), 1)


def training_ids(tokenizer, corpus: Corpus | None = None, offset: int = TRAIN_OFFSET) -> list[int]:
    """Token ids of the learning text ``corpus.text[training_start:]`` (checked disjoint first)."""
    corpus = corpus or default_corpus()
    start = check_disjoint(tokenizer, corpus, offset)
    return list(tokenizer(corpus.text[start:], add_special_tokens=False)["input_ids"])


def training_sequences(tokenizer, n_seqs: int, seq_len: int, *, corpus: Corpus | None = None,
                       offset: int = TRAIN_OFFSET, skip: int = 0, prefix_token: Any = PREFIX_DEFAULT) -> Any:
    """``[n_seqs, seq_len]`` int64 tensor: consecutive non-overlapping windows of the learning text,
    each starting with the prefix token as evaluation's sequence does (``prefix_token``, see
    ``traces.prefix``: by default the tokenizer's own convention; a resolved id or None is taken as
    it is), then text tokens. ``skip``: windows to skip first (so that two uses can take different
    windows)."""
    import torch

    from traces.prefix import resolve, sequence

    for name, v, lo in (("n_seqs", n_seqs, 1), ("seq_len", seq_len, 2), ("skip", skip, 0)):
        check_int(name, v, lo)
    prefix = resolve(prefix_token, tokenizer)
    ids = training_ids(tokenizer, corpus, offset)
    body = seq_len - (prefix is not None)
    need = (skip + n_seqs) * body
    if need > len(ids):
        raise DipsimError(f"n_seqs x seq_len: {skip + n_seqs} windows of {body} tokens need {need} tokens, but the "
                          f"learning text (from character {offset}) has {len(ids)}; ask for fewer")
    rows = []
    for i in range(skip, skip + n_seqs):
        rows.append(sequence(prefix, ids[i * body:(i + 1) * body]))
    return torch.tensor(rows, dtype=torch.long)


def training_corpus(corpus: Corpus | None = None, offset: int = TRAIN_OFFSET, tokenizer=None) -> Corpus:
    """The learning text as a :class:`Corpus` of its own (e.g. to capture a predictor's training trace);
    with a tokenizer the split is checked against it first."""
    corpus = corpus or default_corpus()
    start = check_disjoint(tokenizer, corpus, offset) if tokenizer is not None else training_start(corpus, offset)
    return Corpus(f"{corpus.name}[{start}:]", corpus.text[start:])
