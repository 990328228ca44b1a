"""What must hold for every model family: each test runs on every installed named model (SmolLM2 and
Gemma-3 always, the Qwen models when installed; ``conftest.named_model``), and CI installs
qwen2.5-0.5b so that a second tokenizer convention is always tested (``.ci/run``).

* the prefix token ``auto`` is what the model's tokenizer itself puts before a text;
* the dense perplexity of ``evaluate`` / ``dipsim eval`` is transformers' own loss-based perplexity
  on the text as the tokenizer encodes it (``tok(text).input_ids``), within 0.5%, on the default
  corpus and on a text file;
* a capture has the model's dimensions, its h is the model's own function of x, and it records
  exactly the positions the closed loop masks;
* the layer-wise loop and the token-by-token loop agree on a few tokens;
* the MMLU task's dense answers equal an independent implementation of the prompt and scoring.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import traces
from simulator import accuracy, cli
from traces import prefix
from traces.corpus import default_corpus

from conftest import NAMED_MODELS
from test_accuracy import assert_parted_only_at_a_near_tie
from test_traces import assert_h_matches_weights

DENSE = {"masking": "dense"}
DIP = {"masking": "dip", "keep": 0.5}
CA = {"masking": "dip-ca", "gamma": 0.5, "keep": 0.5}


def own_prefix(tok) -> int | None:
    """What the tokenizer itself puts before a text (None: nothing), from its own encoding."""
    text = "Hello world, and a second clause."
    enc, plain = tok(text).input_ids, tok(text, add_special_tokens=False).input_ids
    assert len(enc) - len(plain) in (0, 1) and enc[len(enc) - len(plain):] == plain
    return enc[0] if len(enc) > len(plain) else None


def hf_loss_perplexity(lm, ids: list[int]) -> float:
    """transformers' own loss-based perplexity of ``ids`` (labels = inputs, shifted inside the model)."""
    import torch

    with torch.inference_mode():
        t = torch.tensor([ids])
        return math.exp(float(lm.model(input_ids=t, labels=t).loss))


def corpus_piece(min_chars: int = 700) -> str:
    """The default corpus up to a paragraph break (so its tokenization is that of the longer text)."""
    text = default_corpus().text
    return text[:text.index("\n\n", min_chars)]


@pytest.mark.slow
def test_auto_prefix_is_the_tokenizers_own_convention(named_model):
    lm = named_model
    name = lm.info.model
    own = own_prefix(lm.tokenizer)
    assert (own is not None) == NAMED_MODELS[name]["add_bos"]       # the GGUF's tokenizer.ggml.add_bos_token
    assert prefix.resolve("auto", lm) == own
    assert prefix.resolve("auto", name) == own                       # from the GGUF header, nothing loaded
    facts = prefix.facts(name)
    assert facts.how.startswith("GGUF tokenizer.ggml.add_bos_token")
    assert (facts.bos, facts.eos) == (lm.tokenizer.bos_token_id, lm.tokenizer.eos_token_id)
    assert facts.vocab_size == lm.info.vocab_size
    assert prefix.resolve("bos", lm) == lm.tokenizer.bos_token_id and prefix.resolve("none", lm) is None


@pytest.mark.slow
def test_dense_perplexity_is_transformers_loss_on_the_default_corpus(named_model):
    lm = named_model
    piece = corpus_piece()
    # the tokenizer's own convention; the last token may merge with what follows in the longer text
    ids = lm.tokenizer(piece).input_ids[:-1]
    n_text = len(lm.tokenizer(piece, add_special_tokens=False).input_ids) - 1
    r = accuracy.evaluate(lm, DENSE, tokens=n_text, warmup=2, reuse=False, details=True)[0]
    assert r["details"]["tokens"] == ids                              # the same tokens
    assert r["prefix_token"] == own_prefix(lm.tokenizer)
    assert r["scored_tokens"] == len(ids) - 1
    assert r["perplexity"] == pytest.approx(hf_loss_perplexity(lm, ids), rel=5e-3)


@pytest.mark.slow
def test_dense_perplexity_is_transformers_loss_on_a_text_file(named_model, tmp_path, monkeypatch, capsys):
    """``dipsim eval --text FILE``, on a text none of the defaults are tuned on: CPython's pydoc topics
    in reverse key order (the held-out text of issue 20)."""
    import traces.models
    from pydoc_data.topics import topics

    lm = named_model
    text = "\n\n".join(topics[k] for k in sorted(topics, reverse=True))[:900]
    f = tmp_path / "held-out.txt"
    f.write_text(text, encoding="utf-8")
    ids = lm.tokenizer(text).input_ids
    n_text = len(lm.tokenizer(text, add_special_tokens=False).input_ids)
    monkeypatch.setattr(traces.models, "load_model", lambda *a, **k: lm)
    argv = ["eval", "--model", lm.info.model, "--text", str(f), "--masking", "dense", "--tokens", str(n_text),
            "--warmup", "2", "--no-reuse", "-q", "--format", "json"]
    assert cli.main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["prefix_token"] == own_prefix(lm.tokenizer) and r["scored_tokens"] == len(ids) - 1
    assert r["perplexity"] == pytest.approx(hf_loss_perplexity(lm, ids), rel=5e-3)


@pytest.mark.slow
def test_capture_has_the_models_dimensions_and_the_masked_positions(named_model, tmp_path):
    lm = named_model
    spec, cfg = NAMED_MODELS[lm.info.model], lm.model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    t = traces.load(traces.capture(lm, tmp_path / "t.safetensors", tokens=40, context=32, progress=False))
    dims = (t.n_layers, t.d_model, t.d_ff)
    assert dims == (spec["n_layers"], spec["d_model"], spec["d_ff"])
    assert dims == (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) and t.n_tokens == 40
    assert t.meta["architecture"] == spec["architecture"]
    own = own_prefix(lm.tokenizer)
    assert t.meta["prefix_token"] == own and t.meta["first_text_token"] == (0 if own is not None else 1)
    last = t.n_layers - 1
    assert_h_matches_weights(lm, t, layers=[0, last // 2, last], tokens=[0, 30, 31, 39])   # across a window edge
    # the first window (its sink + 31 tokens) is the closed loop's sequence of the same length: the
    # trace holds exactly the positions the loop masks
    r = accuracy.evaluate(lm, DENSE, tokens=32 - (own is not None), warmup=2, reuse=False, details=True)[0]
    dense = r["details"]["dense_trace"]
    assert r["details"]["dense_positions"] == 1 and dense.n_tokens == 31
    for layer in (0, last):
        x = np.asarray(dense.x(layer), np.float32)
        np.testing.assert_allclose(np.asarray(t.x(layer)[:31], np.float32), x, rtol=1e-2,
                                   atol=2e-3 * float(np.abs(x).max()))


@pytest.mark.slow
def test_layer_and_token_loops_agree_on_a_few_tokens(named_model):
    lm = named_model
    cfgs = [DENSE, DIP, CA]
    layer = accuracy.evaluate(lm, cfgs, tokens=10, warmup=2, reuse=False, details=True, loop="layer")
    token = accuracy.evaluate(lm, cfgs, tokens=10, warmup=2, reuse=False, details=True, loop="token")
    for a, b in zip(layer, token):
        assert a["scored_tokens"] == b["scored_tokens"] == 10 - (a["prefix_token"] is None)
        assert a["details"]["tokens"] == b["details"]["tokens"]
    np.testing.assert_allclose(layer[0]["details"]["nll"], token[0]["details"]["nll"], rtol=1e-3, atol=1e-3)
    for cfg, a, b in zip(cfgs[1:], layer[1:], token[1:]):
        assert math.isfinite(a["perplexity"]) and a["kl_to_dense"] > 0
        assert 0.0 < a["closed_loop_hit_rate"] <= 1.0 and 0.0 < a["open_loop_hit_rate"] <= 1.0
        assert a["keep_actual"] == {"upgate": 0.5, "down": 0.5}
        assert_parted_only_at_a_near_tie(a, b, cfg, hit_rate_tol=0.1)


@pytest.mark.slow
def test_mmlu_dense_answers_equal_an_independent_implementation(named_model, tmp_path):
    """The MMLU task's prompt and scoring under every model's own tokenizer and prefix convention:
    dipsim's dense answers and letter log-probabilities equal those of one plain forward per question
    of the prompt written out independently (``test_mmlu.reference_answers``)."""
    from test_mmlu import reference_answers, write_questions

    path = write_questions(tmp_path / "own.jsonl")
    ref, ref_lp = reference_answers(named_model, path)
    r = accuracy.evaluate_mmlu(named_model, DENSE, questions=path, questions_per_topic=None, reuse=False,
                               details=True)[0]
    assert r["mmlu_answers"] == ref
    order = np.argsort(r["details"]["ids"])
    np.testing.assert_allclose(r["details"]["logprobs"][order], ref_lp, atol=2e-3)
    assert r["prefix_token"] == prefix.resolve("auto", named_model)
