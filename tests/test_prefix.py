"""The prefix-token convention (traces.prefix): the option's values and errors, what it changes in
the tokens a run sees, the dense positions, the GGUF header reader it learns ``auto`` from, and the
stores that must keep results made under different conventions apart."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import traces
from common.errors import DipsimError
from simulator import accuracy, cli, sweep
from simulator.config import AccuracyRun, TraceSpec
from traces import prefix
from traces.ggufkv import read_keys

DENSE = {"masking": "dense"}
ALLOWED = "allowed: auto, bos, eos, none, or a token id"


# ------------------------------------------------------------------------------------------- values
@pytest.mark.parametrize("value, expected", [("auto", "auto"), (" BOS ", "bos"), ("eos", "eos"), ("none", "none"),
                                             (None, "none"), (7, 7), ("12", 12), (0, 0)])
def test_values_people_write_are_accepted(value, expected):
    assert prefix.check(value, "x") == expected
    assert AccuracyRun.from_mapping({"prefix_token": value}).prefix_token == expected


@pytest.mark.parametrize("value", ["foo", -1, "-3", True, 1.5, "1.5", [1], ""])
def test_bad_values_are_one_line_naming_the_option_and_the_allowed_values(value):
    with pytest.raises(DipsimError) as e:
        TraceSpec.from_mapping({"prefix_token": value}, "exp.yaml: trace")
    msg = str(e.value)
    assert msg.startswith("exp.yaml: trace.prefix_token: unknown prefix token") and ALLOWED in msg
    assert "\n" not in msg


def test_defaults_are_the_models_own_convention():
    assert AccuracyRun().prefix_token == TraceSpec().prefix_token == prefix.DEFAULT == "auto"


@given(st.one_of(st.none(), st.integers(0, 10**6)), st.integers(0, 10_000))
def test_position_0_and_the_prefill_run_densely(pfx, prefill):
    n = prefix.dense_positions(pfx, prefill)
    has = pfx is not None
    assert n >= 1 and n == max(1, has + prefill)
    first_masked_text = n - has                 # index of the first masked text token
    if prefill >= 1:                            # the same text positions whatever the convention
        assert first_masked_text == prefill
    else:
        assert first_masked_text == (0 if has else 1)
    seq = prefix.sequence(pfx, [5, 6, 7])
    assert seq == ([pfx] if has else []) + [5, 6, 7]


# ------------------------------------------------------------------------------------------- GGUF header
def _gguf(path, kv: dict, tensors: dict | None = None) -> None:
    """A GGUF file with these keys and tensors (name -> (float32 array, ggml type))."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    for name, (a, qtype) in (tensors or {}).items():
        w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)
    for k, v in kv.items():
        if isinstance(v, bool):
            w.add_bool(k, v)
        elif isinstance(v, int):
            w.add_uint32(k, v)
        elif isinstance(v, str):
            w.add_string(k, v)
        else:
            w.add_array(k, v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@given(st.lists(st.text(max_size=12), min_size=1, max_size=40), st.booleans(), st.integers(0, 2**31))
def test_gguf_header_reader_agrees_with_gguf_package(tmp_path_factory, tokens, add_bos, bos):
    import gguf

    path = tmp_path_factory.mktemp("g") / "m.gguf"
    kv = {"tokenizer.ggml.tokens": tokens, "tokenizer.ggml.scores": [0.5] * 3, "general.name": "x",
          "tokenizer.ggml.bos_token_id": bos, "tokenizer.ggml.add_bos_token": add_bos}
    _gguf(path, kv)
    got = read_keys(path, list(kv) + ["missing.key"])
    ref = gguf.GGUFReader(str(path)).fields
    assert got["tokenizer.ggml.add_bos_token"] is ref["tokenizer.ggml.add_bos_token"].contents() is add_bos
    assert got["tokenizer.ggml.bos_token_id"] == ref["tokenizer.ggml.bos_token_id"].contents() == bos
    assert got["general.name"] == "x" and got["tokenizer.ggml.tokens"] == len(tokens) and "missing.key" not in got


def test_gguf_tensor_table_and_one_shared_reader(tmp_path):
    import gguf
    from gguf import GGMLQuantizationType as Q

    from traces.ggufkv import one_reader, tensor_table

    rng = np.random.default_rng(0)
    tensors = {"blk.0.ffn_up.weight": (rng.normal(size=(64, 96)).astype(np.float32), Q.Q8_0),
               "blk.0.attn_q.weight": (rng.normal(size=(32, 64)).astype(np.float32), Q.F16),
               "output_norm.weight": (rng.normal(size=(64,)).astype(np.float32), Q.F32)}
    path = tmp_path / "t.gguf"
    _gguf(path, {"tokenizer.ggml.tokens": ["a", "bb"] * 50}, tensors)
    ref = {t.name: (int(t.n_elements), t.tensor_type.name, int(t.n_bytes)) for t in gguf.GGUFReader(str(path)).tensors}
    assert {name: rest for name, *rest in tensor_table(path)} == {k: list(v) for k, v in ref.items()}
    assert ref["blk.0.ffn_up.weight"] == (64 * 96, "Q8_0", 64 * 96 // 32 * 34)
    real = gguf.GGUFReader
    with one_reader():
        a, b = gguf.GGUFReader(path), gguf.GGUFReader(str(path))
        assert a is b and len(a.tensors) == 3
    assert gguf.GGUFReader is real


@pytest.mark.slow
def test_weight_info_from_the_tensor_table_is_gguf_readers(smollm2):
    import gguf

    from traces.models import _gguf_weight_info

    reader = gguf.GGUFReader(str(smollm2.source.path))
    mlp = [t for t in reader.tensors if ".ffn_" in t.name and t.name.endswith(".weight") and "norm" not in t.name]
    info = _gguf_weight_info(smollm2.source.path)
    assert info["weight_dtype"] == "Q4_1"
    assert info["bytes_per_weight"] == sum(int(t.n_bytes) for t in mlp) / sum(int(t.n_elements) for t in mlp)


def test_gguf_header_reader_refuses_damaged_files_in_one_line(tmp_path):
    good = tmp_path / "m.gguf"
    _gguf(good, {"tokenizer.ggml.tokens": ["a", "b"] * 100, "tokenizer.ggml.add_bos_token": True})
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[:200])
    for p, message in ((cut, "cannot read its GGUF header"), (tmp_path / "no.gguf", "cannot read its GGUF header")):
        with pytest.raises(DipsimError, match=message) as e:
            read_keys(p, ["tokenizer.ggml.add_bos_token"])
        assert "\n" not in str(e.value)
    (tmp_path / "text.gguf").write_text("not a gguf at all")
    with pytest.raises(DipsimError, match="not a GGUF file"):
        read_keys(tmp_path / "text.gguf", ["x"])


# ------------------------------------------------------------------------------------------- on SmolLM2
def test_the_option_changes_what_is_tokenized(smollm2, tmp_path):
    """SmolLM2's GGUF says add_bos_token = false: by default nothing precedes the text; ``bos`` puts its
    BOS (id 1, <|im_start|>) first, ``eos`` its EOS (id 2), an id that id."""
    runs = {p: accuracy.evaluate(smollm2, DENSE, tokens=16, warmup=2, reuse=False, details=True, prefix_token=p)[0]
            for p in ("auto", "none", "bos", "eos", 17)}
    text = runs["none"]["details"]["tokens"]
    assert len(text) == 16 and text[0] != 1 and runs["auto"]["details"]["tokens"] == text
    for p, first in (("bos", 1), ("eos", 2), (17, 17)):
        seq = runs[p]["details"]["tokens"]
        assert seq == [first] + text and runs[p]["prefix_token"] == first
        assert runs[p]["scored_tokens"] == 16 and runs[p]["perplexity"] != runs["none"]["perplexity"]
    assert runs["none"]["prefix_token"] is None and runs["none"]["scored_tokens"] == 15
    # a capture records the same text positions the loop masks, and says which convention it ran
    with_bos = traces.load(traces.capture(smollm2, tmp_path / "b.safetensors", tokens=12, context=16,
                                          prefix_token="bos", progress=False))
    assert with_bos.meta["prefix_token"] == 1 and with_bos.meta["first_text_token"] == 0
    dense = runs["bos"]["details"]["dense_trace"]
    np.testing.assert_allclose(np.asarray(with_bos.x(3)[:12], np.float32), dense.x(3)[:12], rtol=1e-2, atol=1e-2)


def test_the_store_keeps_conventions_apart(smollm2, tmp_path, monkeypatch):
    import traces.models

    monkeypatch.setattr(accuracy.store, "results_dir", lambda: tmp_path)
    kw = dict(tokens=12, warmup=2)
    bos = accuracy.evaluate(smollm2, DENSE, prefix_token="bos", **kw)[0]
    none = accuracy.evaluate(smollm2, DENSE, prefix_token="none", **kw)[0]
    assert not bos["from_cache"] and not none["from_cache"] and bos["perplexity"] != none["perplexity"]
    monkeypatch.setattr(traces.models, "load_model", lambda *a, **k: pytest.fail("the results are stored"))
    auto = accuracy.evaluate("smollm2-135m", DENSE, **kw)[0]     # auto resolves to none: the same entry
    assert auto["from_cache"] and auto["perplexity"] == none["perplexity"] and auto["prefix_token"] is None
    again = accuracy.evaluate("smollm2-135m", DENSE, prefix_token=1, **kw)[0]
    assert again["from_cache"] and again["perplexity"] == bos["perplexity"]
    # a result stored before the convention existed (schema 2: BOS always, no prefix in the key) is never read
    from simulator.accuracy.configs import normalize_config

    monkeypatch.setattr(traces.models, "load_model", lambda *a, **k: smollm2)
    monkeypatch.setattr(accuracy.store, "results_dir", lambda: tmp_path / "old")
    cfg = {k: v for k, v in normalize_config(DENSE).items() if k != "label"}
    old = {"schema": 2, "dipsim": traces.__version__, "model": accuracy.store.model_key(smollm2.source),
           "corpus_digest": bos["corpus_digest"], "tokens": 12, "prefill": 0, "warmup": 2, "calib_tokens": 64,
           "loop": "layer", "config": cfg}
    accuracy.store.write_cached(old, {**bos, "perplexity": 1234.0})
    assert accuracy.store.read_cached(old)["perplexity"] == 1234.0
    fresh = accuracy.evaluate("smollm2-135m", DENSE, **kw)[0]
    assert not fresh["from_cache"] and fresh["perplexity"] == pytest.approx(none["perplexity"], rel=1e-9)


@pytest.fixture
def no_model(monkeypatch):
    import traces.models

    monkeypatch.setattr(traces.models, "load_model", lambda *a, **k: pytest.fail("no model work for bad input"))


@pytest.mark.parametrize("argv, message", [
    (["eval", "--prefix-token", "foo"], "command line: prefix_token: unknown prefix token 'foo'; " + ALLOWED),
    (["trace", "--prefix-token", "foo", "--out", "{tmp}/t.safetensors"],
     "command line: prefix_token: unknown prefix token 'foo'; " + ALLOWED),
    (["eval", "--prefix-token", "49152"], "prefix_token: token id 49152 is outside model smollm2-135m's vocabulary; "
                                          "allowed: auto, bos, eos, none, or a token id in 0..49151"),
    (["trace", "--prefix-token", "123456", "--out", "{tmp}/t.safetensors"],
     "prefix_token: token id 123456 is outside model smollm2-135m's vocabulary"),
    (["demo", "--prefix-token", "bs", "--out", "{tmp}/demo"], "unknown prefix token 'bs'"),
])
def test_cli_refuses_bad_prefix_tokens_in_one_line(no_model, tmp_path, capsys, argv, message):
    assert cli.main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dipsim: error: ") and message in err
    assert not (tmp_path / "t.safetensors").exists()


def test_sweep_keys_captures_and_accuracy_on_the_resolved_prefix(tmp_path, monkeypatch):
    from simulator.sweep.execute import trace_prefix

    def path(**kw):
        return sweep.captured_trace_path(TraceSpec.from_mapping({"model": "smollm2-135m", "tokens": 64, **kw}))

    assert path() == path(prefix_token="none") != path(prefix_token="bos") == path(prefix_token=1)
    synth = TraceSpec.from_mapping({"model": "synth:phi3-medium", "tokens": 64})
    assert sweep.captured_trace_path(synth) == sweep.captured_trace_path(
        TraceSpec.from_mapping({"model": "synth:phi3-medium", "tokens": 64, "prefix_token": "bos"}))
    assert trace_prefix({"first_text_token": 1, "prefix_token": None}) == "none"
    assert trace_prefix({"first_text_token": 0, "prefix_token": 1}) == 1
    assert trace_prefix({"bos": True}) == "bos" and trace_prefix({"bos": False}) == "none"   # older traces
    # a bad id in an experiment names the file, the point and the key
    exp = tmp_path / "e.yaml"
    exp.write_text(json.dumps({"name": "e", "trace": {"model": "smollm2-135m", "tokens": 64, "prefix_token": 10**6},
                               "base": {"masking": "dip", "keep": 0.5}}))
    with pytest.raises(DipsimError, match=r"e.yaml: point base: trace: prefix_token: token id 1000000 is outside"):
        sweep.load_experiment(exp)


@pytest.mark.slow
def test_sweep_accuracy_runs_under_the_traces_convention(smollm2, tmp_path, monkeypatch):
    import sys

    import pandas as pd
    import traces.models

    monkeypatch.setattr(accuracy.store, "results_dir", lambda: tmp_path / "accuracy")
    for module in (traces.models, sys.modules["traces.capture"]):   # the loaded model, not a dequantization
        monkeypatch.setattr(module, "load_model", lambda *a, **k: smollm2)
    monkeypatch.setenv("DIPSIM_CACHE_DIR", str(tmp_path / "cache"))
    seen = []
    real = accuracy.evaluate
    monkeypatch.setattr(accuracy, "evaluate", lambda m, c, **kw: seen.append(kw["prefix_token"]) or real(m, c, **kw))
    exp = tmp_path / "e.yaml"
    exp.write_text(json.dumps({"name": "e", "trace": {"model": "smollm2-135m", "tokens": 24, "prefix_token": "bos"},
                               "base": {"masking": "dip", "keep": 0.5, "warmup": 2, "calib_tokens": 8,
                                        "accuracy": True}}))
    df = pd.read_parquet(sweep.run_sweep(sweep.load_experiment(exp), tmp_path / "out", progress=False))
    assert seen and set(seen) == {1} and (df["m.prefix_token"] == 1).all()
    t = traces.load(sweep.captured_trace_path(TraceSpec.from_mapping({"model": "smollm2-135m", "tokens": 24,
                                                                      "prefix_token": "bos"})))
    assert t.meta["prefix_token"] == 1
