"""Every bad input gets one line and touches nothing (issue #13), checked on corrupted experiments,
hardware profiles, traces and command lines generated from valid ones (hypothesis).

Each case runs the real command in-process and asserts: exit status 0 (the mutation happened to be
valid) or 2 with exactly one line on stderr beginning ``dipsim: error:``; never an internal error or
a traceback; no file created or changed beside the inputs. The normal suite draws a few dozen cases
per family; ``DIPSIM_FUZZ=2000 pytest tests/test_bad_input.py`` draws thousands (each case also
runs under a 60 s alarm, so a hang fails instead of blocking).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import struct
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from expected_replay import TRACE

EXAMPLES = int(os.environ.get("DIPSIM_FUZZ", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
PROFILES = Path(__file__).resolve().parent.parent / "hardware_profiles"

BAD_VALUES = st.one_of(
    st.sampled_from([None, True, False, 0, -1, -0.5, 1.5, 2, 1e30, 10 ** 12, float("nan"), float("inf"),
                     float("-inf"), "", "x", "maybe", "2001-12-14", "1e9", "12 GB", "-3 MB", "0x10", "[]", "{}",
                     "dip", "lru2", "\u00e9\u00e8", "a" * 300]),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.sampled_from(["a", "keep", "mode", "value"]), st.integers(-2, 2), max_size=2),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-10 ** 6, 10 ** 6),
)


def run_cli(capsys, argv: list[str], watch: Path) -> tuple[int, str]:
    """Run ``dipsim argv`` in-process under an alarm; return (status, stderr); check that nothing in
    ``watch`` was created or changed unless the command succeeded."""
    from simulator import cli

    before = snapshot(watch)

    def timeout(signum, frame):
        raise TimeoutError(f"dipsim {' '.join(argv)} ran for more than 60 s")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(60)
    try:
        rc = cli.main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("dipsim: warning:")]
    if rc != 0:
        assert rc == 2, (argv, err)
        assert len(lines) == 1 and lines[0].startswith("dipsim: error:"), (argv, err)
        assert "Traceback" not in err
        assert snapshot(watch) == before, f"dipsim {' '.join(argv)} failed but changed files: {err}"
    return rc, err


def snapshot(d: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for p in d.rglob("*"):
        try:
            st_ = p.lstat()
        except OSError:
            continue
        out[str(p.relative_to(d))] = (st_.st_size, st_.st_mtime_ns)
    return out


# ----------------------------------------------------------------------------------------- experiments
def valid_experiment(trace: str) -> dict:
    return {"name": "fuzz", "trace": trace,
            "base": {"masking": "dip-ca", "keep": 0.5, "cache": "lru", "warmup": 4, "gamma": 0.2,
                     "engine": {"mode": "batch"}, "layout": {"reorder": "none"}},
            "grid": {"dram_fraction": [0.25, 0.5]}}


@st.composite
def bad_experiments(draw):
    """A valid experiment with one thing broken, as the YAML text to write."""
    exp = valid_experiment(str(TRACE))
    how = draw(st.sampled_from(["base_value", "grid_value", "delete", "extra", "top", "text", "nested"]))
    keys = ["masking", "keep", "keep_up", "keep_down", "cache", "warmup", "gamma", "dram_fraction", "dram_bytes",
            "allocation", "weight_format", "calib_tokens", "tokens", "device", "accuracy", "accuracy_tokens",
            "cache_params", "engine", "layout", "fixed_top_n", "seed", "trace"]
    if how == "base_value":
        exp["base"][draw(st.sampled_from(keys))] = draw(BAD_VALUES)
    elif how == "grid_value":
        exp["grid"][draw(st.sampled_from(keys + ["engine.overlap_io", "layout.reorder", "cache_params.x"]))] = \
            [0.5, draw(BAD_VALUES)]
    elif how == "delete":
        del exp[draw(st.sampled_from(["trace", "grid", "base"]))]
    elif how == "extra":
        exp[draw(st.sampled_from(["base", "grid"]))][draw(st.sampled_from(["gama", "keeep", "engine.turbo"]))] = [1]
    elif how == "top":
        exp[draw(st.sampled_from(["name", "trace", "grid", "zip", "traces", "extra"]))] = draw(BAD_VALUES)
    elif how == "nested":
        exp["base"][draw(st.sampled_from(["engine", "layout", "cache_params"]))] = {
            draw(st.sampled_from(["mode", "reorder", "turbo", "step_model", "hot_fraction"])): draw(BAD_VALUES)}
    text = yaml.safe_dump(exp, sort_keys=False, allow_unicode=True)
    if how == "text":
        text = draw(st.sampled_from([
            text[: len(text) // 2], text + "\n  - !!binary aGVsbG8=\n", "base: !!set {a, b}\n",
            "a: &x [*x]\n", "trace: !!python/object:os.system ls\n", "keep: 2001-12-14\n", "[" * 3000,
            text.replace("keep: 0.5", "keep: .nan"), text.replace("dram_fraction", "dram_fraction:\n  - "),
        ]))
    return text.encode() if draw(st.booleans()) or how != "text" else b"\xff\xfe" + text.encode()


@FUZZ
@given(body=bad_experiments())
def test_bad_experiments_get_one_line_and_touch_nothing(tmp_path_factory, capsys, body):
    d = tmp_path_factory.mktemp("exp")
    p = d / "exp.yaml"
    p.write_bytes(body)
    run_cli(capsys, ["sweep", str(p), "--out", str(d / "out"), "-q"], d)


# ----------------------------------------------------------------------------------------- profiles
FLASH_KEYS = ["latency", "unit_bandwidth", "units", "queue_depth", "link_bandwidth", "page_bytes",
              "max_request_bytes", "random_penalty", "host_overhead", "read_energy_per_byte", "name", "kind", "cited"]


@st.composite
def bad_profiles(draw):
    kind = draw(st.sampled_from(["flash", "device"]))
    if kind == "flash":
        data = yaml.safe_load((PROFILES / "flash" / "ufs-4.0.yaml").read_text())
        key = draw(st.sampled_from(FLASH_KEYS))
    else:
        data = yaml.safe_load((PROFILES / "devices" / "phone-12gb-ufs40.yaml").read_text())
        key = draw(st.sampled_from(["flash", "dram", "compute", "dram_capacity", "usable_dram_fraction", "overrides",
                                    "kind", "name"]))
    if draw(st.booleans()) or key not in data:
        data[key] = draw(BAD_VALUES)
    else:
        del data[key]
    return yaml.safe_dump(data, allow_unicode=True)


@FUZZ
@given(text=bad_profiles())
def test_bad_profiles_get_one_line(tmp_path_factory, capsys, text):
    d = tmp_path_factory.mktemp("prof")
    p = d / "part.yaml"
    p.write_text(text)
    run_cli(capsys, ["profiles", str(p)], d)


# ----------------------------------------------------------------------------------------- traces
META_KEYS = ["n_layers", "d_model", "d_ff", "n_tokens", "bytes_per_weight", "n_heads", "n_kv_heads", "head_dim",
             "vocab_size", "attn_params_per_layer", "embed_params", "lm_head_params", "context", "has_h", "model",
             "static_bytes_per_weight", "tied_lm_head"]


def rewrite_meta(src: Path, dst: Path, edit) -> None:
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = json.loads(header["__metadata__"]["dipsim"])
    edit(meta, header)
    header["__metadata__"]["dipsim"] = json.dumps(meta)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    dst.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])


@st.composite
def bad_traces(draw):
    how = draw(st.sampled_from(["meta", "truncate", "offsets", "bytes"]))
    key = draw(st.sampled_from(META_KEYS))
    value = draw(BAD_VALUES)
    cut = draw(st.integers(0, 4000))
    return how, key, value, cut


@FUZZ
@given(case=bad_traces())
def test_bad_traces_get_one_line(tmp_path_factory, capsys, case):
    how, key, value, cut = case
    d = tmp_path_factory.mktemp("trace")
    p = d / "t.safetensors"
    if how == "meta":
        rewrite_meta(Path(TRACE), p, lambda m, h: m.__setitem__(key, value))
    elif how == "offsets":
        def overlap(m, h):
            h["x.1"]["data_offsets"] = h["x.0"]["data_offsets"]
        rewrite_meta(Path(TRACE), p, overlap)
    elif how == "truncate":
        p.write_bytes(Path(TRACE).read_bytes()[:cut])
    else:
        raw = bytearray(Path(TRACE).read_bytes())
        raw[8 + cut % 200] ^= 0xFF
        p.write_bytes(bytes(raw))
    run_cli(capsys, ["replay", "--trace", str(p), "--warmup", "2", "--profile", "phone-12gb-ufs40", "-q",
                     "--format", "json"], d)


# ----------------------------------------------------------------------------------------- options
OPTIONS = ["--keep", "--keep-up", "--keep-down", "--gamma", "--cache", "--dram-fraction", "--dram-bytes",
           "--warmup", "--tokens", "--calib-tokens", "--weight-format", "--masking", "--allocation",
           "--cache-params", "--engine-mode", "--engine-overlap-io", "--layout-reorder", "--threads", "--seed"]


@FUZZ
@given(opt=st.sampled_from(OPTIONS), value=BAD_VALUES.map(str))
def test_bad_options_get_one_line(tmp_path_factory, capsys, opt, value):
    d = tmp_path_factory.mktemp("opt")
    t = d / "t.safetensors"
    shutil.copy(TRACE, t)
    argv = ["replay", "--trace", str(t), "--warmup", "2", "-q", "--format", "json", opt, value]
    if opt.startswith(("--engine", "--layout")):
        argv += ["--profile", "phone-12gb-ufs40"]
    if opt in ("--gamma",):
        argv += ["--masking", "dip-ca"]
    run_cli(capsys, argv, d)


def test_named_regressions(tmp_path, capsys):
    """One case per family of the issue, spelled out."""
    d = tmp_path
    t = d / "t.safetensors"
    shutil.copy(TRACE, t)
    cases = [
        (["replay", "--trace", str(t), "--save-log", str(t)], "is the same file as --trace"),
        (["mrc", "--trace", str(t), "--out", str(t)], "is the same file as --trace"),
        (["replay", "--trace", str(t), "--chrome-trace", str(t), "--profile", "phone-12gb-ufs40"], "same file"),
        (["replay", "--trace", str(t), "--save-log", "/proc/x.npz"], "cannot write in /proc"),
        (["replay", "--trace", str(t), "--save-log", str(t / "x.npz")], "is not a folder"),
        (["replay", "--trace", str(t), "--keep", "0"], "keep: must be a number in (0, 1]"),
        (["replay", "--trace", str(t), "--dram-bytes", "1GB", "--dram-fraction", "0.5"], "not both"),
        (["calibrate", "--file", str(d), "--out", str(d / "p.yaml"), "--size", "64MiB"], "not a regular file"),
        (["calibrate", "--file", str(d / "f"), "--out", str(d / "p.yaml"), "--sizes", "abc"], "expected a size"),
        (["calibrate", "--file", str(d / "f"), "--out", str(d / "p.yaml"), "--seconds", "nan"], "seconds > 0"),
        (["plot", str(d / "nowhere")], "results folder not found"),
        (["profiles", str(d / "long.yaml")], "unknown flash part"),           # a name longer than NAME_MAX
        (["replay", "--trace", str(t), "--weight-format", "1e9"], "a number in (0, 8]"),
        (["replay", "--trace", str(t), "--allocation", "benefit", "--allocation-params", "steps=abc"],
         "allocation_params.steps: expected a whole number"),
        (["replay", "--trace", str(t), "--allocation", "benefit", "--allocation-params", "steps=0"],
         "allocation_params.steps: must be a whole number in [1,"),
        (["replay", "--trace", str(t), "--chrome-trace", str(d / "c.json")], "--chrome-trace needs --profile"),
        (["replay", "--trace", str(t), "--engine-mode", "fine"], "--engine-mode needs --profile"),
        (["replay", "--trace", str(t), "--masking", "glu-prune", "--keep-gate", "0.3"], "leaves the upgate group dense"),
        (["calibrate", "--file", "/sys/dipsim-data.bin", "--out", str(d / "p.yaml")], "cannot write in /sys"),
        (["validate", "--trace", str(t), "--profile", "phone-12gb-ufs40", "--file", "/proc/d.bin"],
         "cannot write in /proc"),
        (["trace-info", str(t), "--top", "2"], "expected a number in (0, 1]"),
        (["eval", "--batched-gemm", "--tokens", "8"], "--batched-gemm applies to --loop token only"),
        (["eval", "--model", "synth:phi3-mini", "--tokens", "16"], "a synthetic trace has no model to run"),
        (["plot", str(t)], "not a results folder"),
        (["replay", "--trace", str(t), "--kep", "0.5"], "replay: unrecognized arguments: --kep 0.5 (see dipsim "
                                                         "replay --help)"),
        (["replay", "--trace", str(t), "--gam", "0.5", "--masking", "dip-ca"], "unrecognized arguments: --gam"),
        ([], "give a command: trace, trace-info, synth, "),
    ]
    (d / "long.yaml").write_text("kind: device\nname: x\nflash: " + "a" * 400 + "\ndram: lpddr5x-8533\n")
    for argv, message in cases:
        rc, err = run_cli(capsys, argv, d)
        assert rc == 2 and message in err, (argv, err)
    assert t.read_bytes() == Path(TRACE).read_bytes()
