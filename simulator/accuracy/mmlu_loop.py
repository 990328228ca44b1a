"""The MMLU task with the policy in the loop: multiple-choice questions answered by the masked model.

Each question's prompt (``traces.questions``: lm-eval-harness's MMLU template, with ``shots``
worked examples of its topic) is encoded as the model's own tokenizer does it: the prefix token
(``traces.prefix``; none for SmolLM2 and Qwen2.5, ``<bos>`` for Gemma-3), then the text without
special tokens. Position 0 runs densely (the attention sink, as in the text task); every later
position runs with the configuration's masks and caches. The answer is the letter whose token
(``" A"`` ... ``" D"``) has the highest log-probability at the last position, after ``Answer:``.

A device answers questions one after another, so by default the cache state carries over from one
question to the next: the questions run topic by topic (topics by name), within a topic shortest
prompt first, and every layer's caches step through their masked positions in that order
(``reset_cache``: each question from a fresh cache instead). Attention never crosses questions:
consecutive questions run as the rows of one batch of about ``BATCH_TOKENS`` padded positions
(right-padded, so that a row's causal attention sees only its own tokens), and each layer's hooks
take the batch's masked positions row by row -- question order -- through the policy and caches
(``layerwise._Masker``). Layers' caches are independent, so running the batches one after another
steps every layer's cache through all questions in order: the closed loop of the whole question
stream, exactly, at prefill speed. Length-sorted topics keep the padding small.

The dense forward runs first: it answers for every configuration that prunes nothing and records
the first ``calib_tokens`` masked positions' activations for calibrated policies (threshold,
static, a pinned cache), as the text task's dense trace does.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.errors import DipsimError

#: padded positions per batch (rows x longest prompt): small batches run fastest on a 2-core CPU
BATCH_TOKENS = 1024


@dataclass
class Prompts:
    """The questions of a run as the model sees them, in the order they run."""

    ids: list[int]                 # question indices into the set, in run order
    seqs: list[list[int]]          # token ids (prefix token included)
    letters: list[int]             # token ids of " A", " B", " C", " D"
    batches: list[tuple[int, int]]  # [lo, hi) ranges of run positions, one forward each

    @property
    def masked(self) -> int:
        """Positions that run masked: all but position 0 of every question."""
        return sum(len(s) - 1 for s in self.seqs)


def letter_ids(tokenizer) -> list[int]:
    """The token ids of ``" A"`` ... ``" D"``; a one-line error when one is not a single token."""
    from traces.questions import LETTERS

    out = []
    for letter in LETTERS:
        ids = tokenizer(f" {letter}", add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise DipsimError(f"the tokenizer encodes {' ' + letter!r} as {len(ids)} tokens {ids}; the MMLU task "
                              f"scores single answer-letter tokens")
        out.append(int(ids[0]))
    return out


def build_prompts(tokenizer, qs, ids: list[int], shots: int, seed: int, prefix: int | None,
                  max_positions: int | None = None) -> Prompts:
    """Encode the prompts of questions ``ids`` and order and batch them (module doc)."""
    from traces import prefix as prefix_mod
    from traces import questions as q

    letters = letter_ids(tokenizer)
    enc = {}
    for i in ids:
        text = q.prompt(qs, i, q.shots(qs, i, shots, seed))
        enc[i] = prefix_mod.sequence(prefix, tokenizer(text, add_special_tokens=False)["input_ids"])
        if max_positions and len(enc[i]) > max_positions:
            raise DipsimError(f"question {i + 1} of {qs.name} with {shots} worked examples is {len(enc[i])} tokens, "
                              f"more than the model's context of {max_positions}; ask for fewer --shots")
    topic_rank = {t: r for r, t in enumerate(qs.topics)}
    order = sorted(ids, key=lambda i: (topic_rank[qs.questions[i].topic], len(enc[i]), i))
    seqs = [enc[i] for i in order]
    batches, lo = [], 0
    while lo < len(seqs):
        hi, longest = lo + 1, len(seqs[lo])
        while hi < len(seqs) and (hi - lo + 1) * max(longest, len(seqs[hi])) <= BATCH_TOKENS:
            longest = max(longest, len(seqs[hi]))
            hi += 1
        batches.append((lo, hi))
        lo = hi
    return Prompts(order, seqs, letters, batches)


def _batch(seqs: list[list[int]], pad: int):
    """``input_ids [B, P]`` right-padded, the masked positions ``[B, P]`` (1 .. len - 1 of each row)
    and each row's last position."""
    import torch

    P = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), P), pad, dtype=torch.long)
    sel = torch.zeros((len(seqs), P), dtype=torch.bool)
    for b, s in enumerate(seqs):
        ids[b, :len(s)] = torch.tensor(s)
        sel[b, 1:len(s)] = True
    return ids, sel, torch.tensor([len(s) - 1 for s in seqs])


def _letter_logprobs(lm, hidden, last, letters: list[int]) -> np.ndarray:
    """Log-probabilities ``[B, 4]`` of the answer letters at each row's last position (log-softmax
    over the whole vocabulary, in float32)."""
    import torch

    from .model import head_logits

    h = hidden[torch.arange(hidden.shape[0]), last]
    lp = torch.log_softmax(head_logits(lm.model, h).float(), dim=-1)
    return lp[:, letters].double().numpy()


def forward_batches(lm, prompts: Prompts, masker=None, *, on_batch=None) -> np.ndarray:
    """Run every batch (``masker``: a ``layerwise._Masker`` whose hooks are installed and whose
    configuration is started; None: the plain dense model) and return the letters' log-probabilities
    ``[questions, 4]`` in run order."""
    import torch

    from .model import decoder

    out = np.zeros((len(prompts.seqs), 4))
    pad = int(getattr(lm.tokenizer, "pad_token_id", None) or 0)
    offset = 0
    with torch.inference_mode():
        for lo, hi in prompts.batches:
            ids, sel, last = _batch(prompts.seqs[lo:hi], pad)
            if masker is not None:
                masker.sel, masker.offset = sel, offset
                if masker.segments is not None:
                    masker.segments = [len(s) - 1 for s in prompts.seqs[lo:hi]]
            hidden = decoder(lm.model)(input_ids=ids, use_cache=False).last_hidden_state
            out[lo:hi] = _letter_logprobs(lm, hidden, last, prompts.letters)
            offset += int(sel.sum())
            if on_batch is not None:
                on_batch(hi - lo)
    return out


def calibration_trace(lm, prompts: Prompts, tokens: int, meta: dict[str, Any]):
    """The dense model's x, h and gate activation g at the first ``tokens`` masked positions, in run
    order, as an in-memory trace (what calibrated policies calibrate on: thresholds of x or h, CATS's
    of g); a dense forward of the first batches."""
    import torch

    from traces.capture import register_gate_hook
    from traces.format import Trace

    from .model import decoder, first_arg

    L = lm.info.n_layers
    xs, hs, gs = [[] for _ in range(L)], [[] for _ in range(L)], [[] for _ in range(L)]
    state = {"sel": None, "need": tokens}    # positions still to record: a batch's others are not kept

    def put(buf, i):
        def hook(mod, args, kwargs):
            buf[i].append(first_arg(args, kwargs)[state["sel"]][:state["need"]].float().numpy())
        return hook

    def put_g(i):
        def fn(a):
            gs[i].append(a[state["sel"]][:state["need"]].float().numpy())
        return fn

    handles = []
    for i, mlp in enumerate(lm.mlps):
        handles.append(mlp.register_forward_pre_hook(put(xs, i), with_kwargs=True))
        handles.append(mlp.down_proj.register_forward_pre_hook(put(hs, i), with_kwargs=True))
        handles.append(register_gate_hook(mlp, put_g(i)))
    seen = 0
    try:
        with torch.inference_mode():
            for lo, hi in prompts.batches:
                ids, state["sel"], _ = _batch(prompts.seqs[lo:hi], 0)
                decoder(lm.model)(input_ids=ids, use_cache=False)
                seen += int(state["sel"].sum())
                state["need"] = max(tokens - seen, 0)
                if seen >= tokens:
                    break
    finally:
        for h in handles:
            h.remove()
    x, h, g = (np.stack([np.concatenate(b)[:tokens] for b in buf]) for buf in (xs, hs, gs))
    return Trace.from_arrays(x, h, {**meta, "n_tokens": x.shape[1]}, g)


def check_letters(tokenizer, qs, prompts: Prompts) -> None:
    """lm-eval scores ``" A"`` as the continuation of the prompt: the prompt's tokens followed by the
    letter's must be how the tokenizer encodes the prompt and the answer together (checked on the
    first question; a tokenizer that merges them across the boundary would score something else)."""
    from traces import questions as q

    i = prompts.ids[0]
    text = q.prompt(qs, i, [])
    alone = tokenizer(text, add_special_tokens=False)["input_ids"]
    joined = tokenizer(text + " A", add_special_tokens=False)["input_ids"]
    if list(joined) != list(alone) + [prompts.letters[0]]:
        raise DipsimError("the tokenizer does not encode a prompt followed by ' A' as the prompt's tokens and then "
                          "the letter's: the MMLU task cannot score the answer as one next token")


def answers(logprobs: np.ndarray) -> str:
    """The answer letters (arg-max of the four log-probabilities; the first on a tie, as lm-eval)."""
    from traces.questions import LETTERS

    return "".join(LETTERS[j] for j in np.argmax(logprobs, axis=1))


def run_config(lm, prompts: Prompts, run, reset: bool, fresh, *, on_batch=None) -> tuple[np.ndarray, float]:
    """One pruning configuration over every question: its hooks, its forward of every batch; the
    letters' log-probabilities and the seconds its policies and caches took."""
    from ..methods.apply import applied
    from .layerwise import _Masker

    masker = _Masker(lm, 1, False)
    masker.segments = [] if reset else None
    masker.fresh = fresh
    handles = masker.install()
    try:
        masker.start(run)
        with applied(lm, run.cfg):
            lp = forward_batches(lm, prompts, masker, on_batch=on_batch)
    finally:
        for h in handles:
            h.remove()
    return lp, masker.select_seconds


def step_unpruned(run, prompts: Prompts, n_layers: int, reset: bool, fresh) -> None:
    """A configuration that prunes nothing: its caches stepped with every column at every position."""
    for g in run.runs:
        for layer in range(n_layers):
            if not reset:
                g.run_layer(layer, None)
                continue
            at = 0
            for s in prompts.seqs:
                g.run_layer(layer, None, at, len(s) - 1, cache=fresh(g))
                at += len(s) - 1


def mmlu_meta(lm, qs, prompts: Prompts, prefix: int | None) -> dict[str, Any]:
    meta = dict(lm.info.as_meta())
    meta.update(corpus=qs.name, corpus_digest=qs.digest, prefix_token=prefix, has_h=True, has_g=True,
                context=max(len(s) for s in prompts.seqs))   # the loop's hooks see g (neuron policies: cats)
    return meta


def with_calib(cfgs, meta, trace, calib_tokens):
    """Per configuration: its replay setup and calibration (``evaluate._setups``, on ``trace``)."""
    from ..replay import calibration, prepare
    from .configs import replay_config

    out = []
    for c in cfgs:
        rc = dataclasses.replace(replay_config(c), calib_tokens=calib_tokens)
        calib = calibration(trace, meta, rc) if trace is not None else None
        out.append((prepare(meta, rc, calib), calib))
    return out

