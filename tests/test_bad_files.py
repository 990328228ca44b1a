"""Issue 22, the internal errors: input files and values that reached dipsim's code unchecked.

Method files checked against their declared schema (``common.store.schema``) and their tensors from
the header; traces' optional metadata (``traces.format.OPTIONAL_META``); broken GGUF files and
Hugging Face folders; names too long for the file system; special and unreadable files
(``common.io.input_file``); sizes refused before anything is written (``common.io.check_space``, the
trace writer's limits); option values (cache parameters, seeds, a Dask address, nesting in --config).
"""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from badinput import expect_error, leftovers, method_files, rewrite_meta, run_cli, without_tensors
from common.errors import DipsimError
from expected_replay import TRACE

KEY_OF = {"variant": "variant", "adapter": "adapter", "predictor": "predictor_file"}


def sweep_naming(d: Path, kind: str, path: Path) -> Path:
    exp = d / "exp.yaml"
    exp.write_text(yaml.safe_dump({"name": "m", "trace": str(TRACE), "base": {
        "masking": "predictor" if kind == "predictor" else "dense", "warmup": 4, "device": "phone-12gb-ufs40",
        KEY_OF[kind]: str(path)}, "grid": {"dram_fraction": [0.25, 0.5]}}))
    return exp


# ----------------------------------------------------------------------------------------- method files
@pytest.mark.parametrize("kind, edit, message", [
    ("variant", lambda m, h: m.pop("id"), "metadata id: missing"),
    ("variant", lambda m, h: m.pop("bytes"), "metadata bytes: missing"),
    ("variant", lambda m, h: m.__setitem__("bytes", "x"), "metadata bytes: expected the stored bytes per weight"),
    ("variant", lambda m, h: m["bytes"].__setitem__("bitmask_per_weight", "x"), "bytes.bitmask_per_weight: expected"),
    ("variant", lambda m, h: m["bytes"].__setitem__("bitmask_per_weight", -1), "bytes.bitmask_per_weight: must be"),
    ("variant", lambda m, h: m["bytes"].__setitem__("bitmask_per_weight", float("nan")), "expected a number in"),
    ("variant", lambda m, h: m.__setitem__("n_layers", "x"), "metadata n_layers: expected a whole number"),
    ("variant", lambda m, h: m.__setitem__("matrices", "x"), "metadata matrices: expected a mapping"),
    ("adapter", lambda m, h: m.pop("fp16_bytes"), "metadata fp16_bytes: missing"),
    ("adapter", lambda m, h: m.__setitem__("fp16_bytes", "x"), "metadata fp16_bytes: expected a number"),
    ("adapter", lambda m, h: m.__setitem__("fp16_bytes", float("nan")), "metadata fp16_bytes: expected a number"),
    ("adapter", lambda m, h: m.__setitem__("rank", 0), "metadata rank: must be a whole number in [1, "),
    ("adapter", None, "without LoRA tensors"),
    ("predictor", lambda m, h: m.pop("id"), "metadata id: missing"),
    ("predictor", lambda m, h: m.pop("heads"), "metadata heads: missing"),
    ("predictor", lambda m, h: m.__setitem__("heads", ["sideways"]), "expected down and/or upgate"),
    ("predictor", lambda m, h: h.pop("mu"), "predictor tensor 'mu' is missing, expected [6, 576]"),
    ("predictor", lambda m, h: h.pop("down.3.b2"), "predictor tensor 'down.3.b2' is missing"),
    ("predictor", lambda m, h: m.__setitem__("d_model", 64), "predictor tensor 'mu' is [6, 576], expected [6, 64]"),
    ("predictor", lambda m, h: m.__setitem__("kind", "x"), "metadata kind: expected one of variant, adapter"),
])
def test_method_files_are_checked_against_their_schema_before_any_work(tmp_path, capsys, kind, edit, message):
    src = method_files(tmp_path)[kind]
    bad = tmp_path / "bad.safetensors"
    if edit is None:
        without_tensors(src, bad)
    else:
        rewrite_meta(src, bad, edit, "dipsim_method")
    expect_error(capsys, ["sweep", str(sweep_naming(tmp_path, kind, bad)), "--out", str(tmp_path / "o")], tmp_path,
                 message)
    assert not (tmp_path / "o").exists()


def test_method_files_for_another_model_are_refused_without_accuracy(tmp_path, capsys):
    """A variant (or predictor) made for another model's dimensions: refused by the sweep's check of
    the point against its trace, not applied silently to a model it does not fit."""
    files = method_files(tmp_path)
    other = tmp_path / "other.safetensors"
    rewrite_meta(files["variant"], other, lambda m, h: m.update(model="qwen2.5-0.5b", n_layers=24, d_model=896,
                                                                d_ff=4864), "dipsim_method")
    expect_error(capsys, ["sweep", str(sweep_naming(tmp_path, "variant", other)), "--dry-run"], tmp_path,
                 "made for model = 'qwen2.5-0.5b'")
    big = tmp_path / "big.safetensors"
    import numpy as np

    import traces

    traces.save(big, traces.Trace.from_arrays(np.ones((6, 8, 64), np.float16), np.ones((6, 8, 1536), np.float16),
                                              {"n_tokens": 8, "model": files_model(files["predictor"])}))
    expect_error(capsys, ["replay", "--trace", str(big), "--masking", "predictor", "--predictor-file",
                          str(files["predictor"]), "--warmup", "2"], tmp_path, "made for d_model = 576, this model has 64")


def files_model(path: Path) -> str:
    from common import store

    return store.read_meta(path)["model"]


def test_damaged_method_files_get_one_line(tmp_path, capsys):
    src = method_files(tmp_path)["adapter"].read_bytes()
    for name, data in (("empty", b""), ("short", src[:6]), ("cut", src[:300]), ("tail", src[:-8]),
                       ("random", os.urandom(4000))):
        p = tmp_path / f"{name}.safetensors"
        p.write_bytes(data)
        rc, err = run_cli(capsys, ["sweep", str(sweep_naming(tmp_path, "adapter", p)), "--dry-run"], tmp_path)
        assert rc == 2 and str(p) in err


# ----------------------------------------------------------------------------------------- traces
@pytest.mark.parametrize("key, value", [
    ("adapter_bytes", "x"), ("adapter_bytes", -1), ("synth", 5), ("synth", {"validation": 5}),
    ("synth", {"validation": {"hit_rate_abs_error_max": "x"}}),
    ("synth", {"validation": {"hit_rate_abs_error_max": 0.02, "by_config": 5}}),
    ("synth", {"validation": {"hit_rate_abs_error_max": 0.02, "by_config": [1, 2]}}),
    ("corpus", 5), ("bos", "x"), ("tied_lm_head", "yes"), ("mlp_kind", 5),
    ("prefix_token", {"x": 1}), ("prefix_token", -1), ("prefix_token", "bos"), ("first_text_token", -5),
    ("first_text_token", 1.5),     # the accuracy of a sweep reads them as int() (a TypeError on a mapping)
])
def test_optional_trace_metadata_is_checked_when_the_trace_loads(tmp_path, capsys, key, value):
    p = tmp_path / "t.safetensors"
    rewrite_meta(Path(TRACE), p, lambda m, h: m.__setitem__(key, value))
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({"trace": str(p), "base": {"warmup": 4, "device": "phone-12gb-ufs40"}}))
    for argv in (["replay", "--trace", str(p), "--profile", "phone-12gb-ufs40"], ["trace-info", str(p)],
                 ["sweep", str(exp), "--out", str(tmp_path / "o")]):
        expect_error(capsys, argv, tmp_path, f"metadata field '{key}'")


def test_bytes_after_the_last_tensor_are_refused(tmp_path, capsys):
    """A trace or method file with data after its last tensor (a damaged file, or two joined) loaded as
    if nothing were wrong; the format's data is exactly its tensors."""
    p = tmp_path / "t.safetensors"
    p.write_bytes(Path(TRACE).read_bytes() + b"garbage!")
    for argv in (["replay", "--trace", str(p)], ["trace-info", str(p)]):
        expect_error(capsys, argv, tmp_path, "8 bytes after the last tensor (a damaged file, or two joined)")
    files = method_files(tmp_path)
    files["adapter"].write_bytes(files["adapter"].read_bytes() + b"\0" * 16)
    exp = sweep_naming(tmp_path, "adapter", files["adapter"])
    expect_error(capsys, ["sweep", str(exp), "--dry-run"], tmp_path, "16 bytes after the last tensor")


def test_a_text_of_nul_characters_is_not_a_corpus(tmp_path, capsys):
    """NUL bytes are valid UTF-8, so a binary file of them ran as a corpus."""
    (tmp_path / "nul.txt").write_bytes(b"text" + b"\0" * 5000)
    expect_error(capsys, ["trace", "--text", str(tmp_path / "nul.txt"), "--tokens", "16", "--out",
                          str(tmp_path / "o.safetensors")], tmp_path, "holds NUL characters (the first at character 4)")


# ----------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("name, data", [("random", os.urandom(20000)), ("empty", b""), ("magic", b"GGUF"),
                                        ("truncated", None)])
def test_broken_gguf_files_get_one_line(tmp_path, capsys, name, data):
    from traces.models import resolve

    p = tmp_path / "m.gguf"
    p.write_bytes(resolve("smollm2-135m").path.read_bytes()[: 1 << 20] if data is None else data)
    expect_error(capsys, ["trace", "--model", str(p), "--tokens", "16", "--out", str(tmp_path / "o.safetensors")],
                 tmp_path, str(p))


@pytest.mark.parametrize("config", ["{", "[]", "", "\x00\x01"])
def test_a_hugging_face_folder_with_a_broken_config_gets_one_line(tmp_path, capsys, config):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(config)
    expect_error(capsys, ["trace", "--model", str(tmp_path / "hf"), "--tokens", "16", "--out",
                          str(tmp_path / "o.safetensors")], tmp_path, "config.json: not a model configuration")


# ----------------------------------------------------------------------------------------- paths
def test_names_too_long_for_the_file_system(tmp_path, capsys):
    long, huge = "n" * 300, "a" * 3000
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({"trace": str(TRACE), "base": {"warmup": 4}}))
    cases = [(["trace", "--model", huge, "--tokens", "16", "--out", str(tmp_path / "o.safetensors")], "unknown model"),
             (["trace", "--model", huge + ".gguf", "--tokens", "16", "--out", str(tmp_path / "o.safetensors")],
              "File name too long"),
             (["mrc", "--trace", str(TRACE), "--out", str(tmp_path / (long + ".csv"))], "File name too long"),
             (["replay", "--trace", str(tmp_path / huge)], "File name too long"),
             (["sweep", str(tmp_path / (huge + ".yaml"))], "File name too long"),
             (["sweep", str(exp), "--out", str(tmp_path / long)], "File name too long"),
             (["synth", "--like", "phi3-mini", "--out", str(tmp_path / long / "s.safetensors")], "File name too long")]
    for argv, message in cases:
        err = expect_error(capsys, argv, tmp_path, message)
        assert len(err) < 400 and "characters)" in err or long not in err     # a 3000-character name is cut


def test_a_path_a_thousand_folders_deep_is_made(tmp_path):
    """Legal (under PATH_MAX) but deeper than Python's recursion: Path.mkdir(parents=True) failed
    with a RecursionError; every writer makes its folders with common.io.make_folder."""
    from common.io import make_folder

    deep = tmp_path.joinpath(*["d"] * 1200)
    assert make_folder(deep).is_dir()
    while deep != tmp_path:         # removed level by level (rmtree recurses too)
        deep.rmdir()
        deep = deep.parent


@pytest.mark.parametrize("path, message", [
    ("/dev/zero", "not a regular file"), ("/proc/self/status/x", "not found"),
    ("{d}", "is a folder"), ("{d}/loop", "Too many levels of symbolic links"), ("{d}/fifo", "not a regular file"),
    ("{d}/gone", "not found"),
])
def test_special_files_are_named_for_what_they_are(tmp_path, capsys, path, message):
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    os.mkfifo(tmp_path / "fifo")
    path = path.replace("{d}", str(tmp_path))
    for argv in (["replay", "--trace", path], ["trace", "--text", path, "--tokens", "16", "--out",
                                                 str(tmp_path / "o.safetensors")],
                 ["eval", "--config", path] if os.path.lexists(path) else ["eval", "--config", path + ".yaml"],
                 ["sweep", path], ["synth", "fit", "--traces", path, "--out", str(tmp_path / "f.json")],
                 ["calibrate", "--file", path, "--out", str(tmp_path / "p.yaml"), "--sizes", "4KiB"]):
        if argv[0] == "calibrate" and not os.path.lexists(path):
            continue                                # a path for a new data file: an output, checked as one
        err = expect_error(capsys, argv, tmp_path, message)
        assert "text file not found: /dev" not in err


# ----------------------------------------------------------------------------------------- sizes
def test_sizes_are_refused_before_anything_is_written(tmp_path, capsys):
    expect_error(capsys, ["synth", "--like", "phi3-medium", "--tokens", "1000000000", "--out",
                          str(tmp_path / "s.safetensors")], tmp_path, "n_tokens 1000000000 is out of range")
    expect_error(capsys, ["synth", "--like", "phi3-medium", "--tokens", "50000000", "--out",
                          str(tmp_path / "s.safetensors")], tmp_path, "the file system has")
    expect_error(capsys, ["calibrate", "--file", str(tmp_path / "d.bin"), "--out", str(tmp_path / "p.yaml"),
                          "--size", "1e15"], tmp_path, "needs 1 PB, and the file system has")
    expect_error(capsys, ["trace", "--tokens", "16", "--context", "1000000000", "--out",
                          str(tmp_path / "o.safetensors")], tmp_path, "context: must be a whole number in [2, 67108864]")


def test_calibration_bounds_and_storage_in_memory(tmp_path, capsys):
    """What the campaign rerun found in calibrate and validate: a 1 TiB request size was an internal
    error (ENOMEM allocating its buffer), a queue depth of 100,000 ran (a thread per read with
    --io threads), a --name of several lines was written into the profile, a file on tmpfs was
    measured (RAM, not storage; newer kernels allow O_DIRECT there), and validate --tokens beyond the
    trace was cut to the trace silently. All refused before any data file is written."""
    from simulator.disk.reads import file_system

    cal = ["calibrate", "--file", str(tmp_path / "d.bin"), "--out", str(tmp_path / "p.yaml"), "--size", "64MiB",
           "--depths", "1,2", "--seconds", "0.02", "--passes", "1"]
    expect_error(capsys, cal + ["--sizes", "4KiB,1TiB"], tmp_path, "request sizes must be at most 64 MiB")
    expect_error(capsys, cal + ["--sizes", "4KiB,64KiB", "--depths", "1,100000"], tmp_path,
                 "queue depths must be in 1..256")
    expect_error(capsys, cal + ["--sizes", "4KiB,64KiB", "--name", "a\nb"], tmp_path, "--name must be one line")
    expect_error(capsys, ["validate", "--trace", str(TRACE), "--profile", "phone-12gb-ufs40", "--file",
                          str(tmp_path / "d.bin"), "--tokens", "1000", "--warmup", "2"], tmp_path,
                 "tokens must be in 1..48 (the trace's length), got 1000")
    shm = Path("/dev/shm")
    if file_system(shm) != "tmpfs" or not os.access(shm, os.W_OK):
        pytest.skip("no writable tmpfs at /dev/shm")
    name = f"dipsim-test-{os.getpid()}.bin"
    try:
        expect_error(capsys, cal[:1] + ["--file", str(shm / name)] + cal[3:] + ["--sizes", "4KiB,64KiB"], tmp_path,
                     "on tmpfs, a file system in memory")
        expect_error(capsys, ["validate", "--trace", str(TRACE), "--profile", "phone-12gb-ufs40", "--file",
                              str(shm / name)], tmp_path, "on tmpfs, a file system in memory")
        assert not (shm / name).exists()
    finally:
        (shm / name).unlink(missing_ok=True)


def test_a_file_size_limit_is_honoured_up_front(tmp_path):
    """Under ``ulimit -f`` the trace writer refuses at once ("File too large" used to come after the
    writing), and leaves no temporary file."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    r = subprocess.run([sys.executable, "-m", "simulator.cli", "synth", "--like", "phi3-mini", "--tokens", "64",
                        "--out", str(tmp_path / "s.safetensors"), "-q"], capture_output=True, text=True,
                       preexec_fn=limit, timeout=120)
    assert r.returncode == 2 and "more than this process may write to one file" in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------- option values
def test_option_values_that_reached_the_code_unchecked(tmp_path, capsys):
    shutil.copy(TRACE, tmp_path / "t.safetensors")
    t = str(tmp_path / "t.safetensors")
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({"trace": t, "base": {"warmup": 4}}))
    cases = [(["replay", "--trace", t, "--cache", "pinned", "--cache-params", "hot_fraction=abc"],
              "cache_params: pinned: could not convert string to float: 'abc'"),
             (["synth", "--like", "phi3-mini", "--seed", "-1", "--out", str(tmp_path / "s.safetensors")],
              "expected a whole number in [0, 2^31], got '-1'"),
             (["synth", "validate", "--seed", "-1"], "expected a whole number in [0, 2^31]"),
             (["replay", "--trace", t, "--threads", "100000"], "argument --threads: expected a whole number in [1, "),
             (["eval", "--config", "{" * 5000], "nested deeper than the limit"),
             (["eval", "--config", '{"masking": "dip", "label": [1, 2]}'], "label: expected a non-empty text"),
             (["sweep", str(exp), "--out", str(tmp_path / "o"), "--executor", "dask", "--scheduler",
               "not-an-address"], "--scheduler not-an-address: cannot reach the Dask scheduler")]
    for argv, message in cases:
        expect_error(capsys, argv, tmp_path, message)
    assert not (tmp_path / "o").exists() and leftovers(tmp_path) == [] and not (tmp_path / "dask-scratch-space").exists()


def test_a_method_file_error_names_the_file_and_field(tmp_path):
    from common import store

    bad = tmp_path / "bad.safetensors"
    rewrite_meta(method_files(tmp_path)["adapter"], bad, lambda m, h: m.__setitem__("rank", "x"), "dipsim_method")
    with pytest.raises(DipsimError, match=rf"^{bad}: metadata rank: expected a whole number"):
        store.read_meta(bad, "adapter")
