"""Issue 22: inputs overwritten by outputs, nonsense accepted, partial outputs, leftovers, unclear
messages -- one named case or more per family, each through the real command line.

One output check (``common.io.check_outputs``: writable, the allowed suffix, no trailing slash, none
of the inputs); data files that dipsim did not make are never extended (``disk.reads.data_file``); a
sweep writes nothing before its executor, traces and accuracy are ready and removes the folder it
made if no point finished (``sweep.results``); Dask scratch space goes with the cluster.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from badinput import expect_error, leftovers, method_files, rewrite_meta, run_cli, without_tensors
from common.errors import DipsimError
from expected_replay import TRACE

FIT = Path(__file__).resolve().parent.parent / "traces" / "synth" / "fit.json"


@pytest.fixture
def d(tmp_path):
    shutil.copy(TRACE, tmp_path / "t.safetensors")
    shutil.copy(FIT, tmp_path / "fit.json")
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({"name": "e", "trace": str(tmp_path / "t.safetensors"),
                                                       "base": {"masking": "dip", "warmup": 4},
                                                       "grid": {"dram_fraction": [0.25, 0.5]}}))
    return tmp_path


# ----------------------------------------------------------------------------------------- inputs overwritten
def test_an_output_that_is_an_input_is_refused(d, capsys):
    t, fit = str(d / "t.safetensors"), str(d / "fit.json")
    cases = [(["synth", "--like", "phi3-mini", "--tokens", "8", "--fit", fit, "--out", fit], "is the same file as --fit"),
             (["synth", "fit", "--traces", fit, "--out", fit], "--out " + fit + ": is the same file as --traces"),
             (["synth", "validate", "--fit", fit, "--save-fit", fit], "is the same file as --fit"),
             (["replay", "--trace", t, "--save-log", t], "is the same file as --trace"),
             (["mrc", "--trace", t, "--out", str(d / "m.csv"), "--plot", str(d / "m.csv")], "same file as --out"),
             (["calibrate", "--file", str(d / "p.yaml"), "--out", str(d / "p.yaml")], "is the same file as --file"),
             (["validate", "--trace", t, "--profile", "phone-12gb-ufs40", "--file", t], "is the same file as --trace")]
    for argv, message in cases:
        expect_error(capsys, argv, d, message)


@pytest.mark.parametrize("verb", ["calibrate", "validate"])
def test_a_data_file_dipsim_did_not_make_is_never_extended(d, capsys, verb):
    notes = d / "notes.txt"
    notes.write_text("my notes\n")
    argv = (["calibrate", "--file", str(notes), "--out", str(d / "p.yaml"), "--size", "64MiB", "--seconds", "0.01",
             "--passes", "1"] if verb == "calibrate" else
            ["validate", "--trace", str(d / "t.safetensors"), "--profile", "phone-12gb-ufs40", "--file", str(notes),
             "--rounds", "1"])
    expect_error(capsys, argv, d, f"--file {notes}: exists (9 B) and was not made by dipsim")
    assert notes.read_text() == "my notes\n"


def test_a_data_file_dipsim_made_is_extended_and_one_it_created_goes_if_the_run_fails(tmp_path, monkeypatch):
    from simulator.disk import reads

    p = tmp_path / "data.bin"
    with reads.data_file(p, 3 * reads.MiB, progress=False):
        pass
    assert p.read_bytes().startswith(reads.DATA_MAGIC) and p.stat().st_size == 3 * reads.MiB
    with reads.data_file(p, 5 * reads.MiB, progress=False):      # ours: extended, not refused
        pass
    assert p.stat().st_size == 5 * reads.MiB
    new = tmp_path / "new.bin"
    with pytest.raises(DipsimError, match="boom"):
        with reads.data_file(new, reads.MiB, progress=False):
            raise DipsimError("boom")                               # e.g. no O_DIRECT on this file system
    assert not new.exists()


# ----------------------------------------------------------------------------------------- nonsense accepted
def test_nonsense_that_used_to_be_accepted(d, capsys):
    t = str(d / "t.safetensors")
    exp = d / "over.yaml"
    exp.write_text(yaml.safe_dump({"trace": t, "base": {"masking": "dip-ca", "gamma": -0.1, "warmup": 4},
                                   "grid": {"gamma": [0.2, 0.5]}}))
    cases = [(["mrc", "--trace", t, "--out", str(d / "m.csv") + "/"], "ends with a slash"),
             (["replay", "--trace", t, "--save-log", str(d / "l.npz") + "/"], "ends with a slash"),
             (["synth", "--like", "phi3-mini", "--out", str(d / "o.txt")], "unsupported file type '.txt'"),
             (["replay", "--trace", t, "--save-log", str(d / "l.txt")], "unsupported file type '.txt'"),
             (["sweep", str(exp), "--dry-run"], "gamma: must be a number in [0, 1], got -0.1"),
             (["replay", "--trace", t, "--allocation-params", "steps=3"], "the uniform allocation takes no parameters"),
             (["replay", "--trace", t, "--dram-bytes", "1e30GiB"], "'1e30GiB' is more than 1000 TB"),
             (["trace", "--tokens", "16", "--text-column", "body", "--out", str(d / "o.safetensors")],
              "--text-column applies to --dataset only"),
             (["replay", "--trace", t, "--profile="], "--profile: an empty value"),
             (["eval", "--config", "[]"], "an empty list: give at least one configuration"),
             (["synth", "validate", "--trace-dir", str(d), "--traces", t, "--tokens", "1000"], "not in the fit"),
             (["synth", "fit", "--traces", str(d / "one.safetensors"), "--out", str(d / "f.json"), "--no-validate"],
              "1 tokens; measuring a model's statistics"),
             (["sweep", str(d / "exp.yaml"), "--out", str(d / "o"), "--scheduler", "tcp://127.0.0.1:8786"],
              "applies to --executor dask only")]
    import traces

    src = traces.load(t)
    traces.save(d / "one.safetensors", traces.Trace.from_arrays(np.stack([src.x(i)[:1] for i in range(6)]),
                                                                 np.stack([src.h(i)[:1] for i in range(6)]), src.meta))
    for argv, message in cases:
        expect_error(capsys, argv, d, message)


def test_a_synthetic_trace_is_not_fitted_and_validate_tokens_stay_within_the_traces(tmp_path, capsys):
    import traces
    from simulator import synth_validation

    rc, _ = run_cli(capsys, ["synth", "--like", "phi3-mini", "--tokens", "16", "--out", str(tmp_path / "s.safetensors"),
                             "-q"], tmp_path)
    assert rc == 0
    expect_error(capsys, ["synth", "fit", "--traces", str(tmp_path / "s.safetensors"), "--out", str(tmp_path / "f.json"),
                          "--no-validate"], tmp_path, "a synthetic trace")
    real = {"a": traces.load(TRACE), "b": traces.load(TRACE)}
    with pytest.raises(DipsimError, match="--tokens 1000: more than the 48 tokens of the real trace of a"):
        synth_validation.validation_tokens(real, 1000, 16, "--tokens")
    assert synth_validation.validation_tokens(real, None, 16, "--tokens") == 48      # the default: what there is


@pytest.mark.parametrize("damage, message", [
    (lambda df: df.assign(**{c: np.nan for c in df.columns if c.startswith("m.")}), "no metric has a finite value"),
    (lambda df: pd.concat([df, df]), "appears 2 times"),
    (lambda df: df.assign(**{"m.hit_rate": "x"}), "column m.hit_rate holds 'x', expected numbers"),
    (lambda df: df.iloc[:0], "no finished points"),
])
def test_plot_refuses_results_it_cannot_draw_honestly(d, capsys, damage, message):
    rc, _ = run_cli(capsys, ["sweep", str(d / "exp.yaml"), "--out", str(d / "res"), "-q"], d)
    assert rc == 0
    p = d / "res" / "results.parquet"
    damage(pd.read_parquet(p)).to_parquet(p, index=False)
    expect_error(capsys, ["plot", str(d / "res"), "--out", str(d / "p.png")], d, message)


def test_an_adapter_without_tensors_and_a_device_with_absurd_dram_are_refused(d, capsys):
    bad = d / "bad.safetensors"
    without_tensors(method_files(d)["adapter"], bad)
    expect_error(capsys, ["eval", "--config", f'{{"masking": "dip", "adapter": "{bad}"}}', "--tokens", "16"], d,
                 "an adapter file without LoRA tensors")
    prof = yaml.safe_load((Path(__file__).resolve().parent.parent / "hardware_profiles" / "devices" /
                           "phone-12gb-ufs40.yaml").read_text())
    prof["dram_capacity"] = {"value": "1e30 GiB", "source": "a typo"}
    (d / "p.yaml").write_text(yaml.safe_dump(prof))
    expect_error(capsys, ["replay", "--trace", str(d / "t.safetensors"), "--profile", str(d / "p.yaml")], d,
                 "field 'dram_capacity': '1e30 GiB' is outside the plausible range")


# ----------------------------------------------------------------------------------------- partial outputs, leftovers
def test_a_sweep_that_fails_before_its_first_point_leaves_no_folder(d, capsys, monkeypatch):
    from simulator.sweep import run

    def fail(cfg, threads=None, **kw):
        raise DipsimError("the first point failed")

    monkeypatch.setattr(run, "run_point", fail)
    expect_error(capsys, ["sweep", str(d / "exp.yaml"), "--out", str(d / "out"), "-q"], d, "the first point failed")
    assert not (d / "out").exists()
    (d / "kept").mkdir()
    (d / "kept" / "mine.txt").write_text("not the sweep's")       # a folder that was there: only its own files go
    expect_error(capsys, ["sweep", str(d / "exp.yaml"), "--out", str(d / "kept"), "-q"], d, "not a dipsim sweep folder")


def test_a_failed_trace_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    from traces.synth import generate

    calls = []

    def fail(self, out, noise):
        calls.append(1)
        if len(calls) > 40:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(generate._Stream, "next", fail)
    with pytest.raises(OSError):
        generate.write_trace(tmp_path / "s.safetensors", generate.Fit.load(), 4, 64, 128, 256, window=16)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_dask_sweep_leaves_no_scratch_space(d, capsys, monkeypatch):
    import tempfile

    monkeypatch.chdir(d)
    tmp = Path(tempfile.gettempdir())
    before = {p.name for p in tmp.iterdir() if "dask" in p.name}
    rc, _ = run_cli(capsys, ["sweep", str(d / "exp.yaml"), "--out", str(d / "out"), "--executor", "dask", "--jobs",
                             "1", "-q"], d, seconds=180)
    assert rc == 0 and len(pd.read_parquet(d / "out" / "results.parquet")) == 2
    assert leftovers(d) == [] and {p.name for p in tmp.iterdir() if "dask" in p.name} <= before


# ----------------------------------------------------------------------------------------- messages
def test_messages_stay_one_readable_line(d, capsys):
    huge = "a" * 3000
    err = expect_error(capsys, ["replay", "--trace", str(d / huge)], d, "(3")
    assert len(err) < 300 and "characters)" in err
    err = expect_error(capsys, ["trace", "--text", "/dev/zero", "--tokens", "16", "--out", str(d / "o.safetensors")],
                       d, "/dev/zero: not a regular file")
    assert "not found" not in err


def test_named_regressions_of_issue_13(tmp_path, capsys):
    """The cases of the first campaign (issue 13), one per family, spelled out."""
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
        (["calibrate", "--file", str(d), "--out", str(d / "p.yaml"), "--size", "64MiB"], "is a folder"),
        (["calibrate", "--file", str(d / "f"), "--out", str(d / "p.yaml"), "--sizes", "abc"], "expected a size"),
        (["calibrate", "--file", str(d / "f"), "--out", str(d / "p.yaml"), "--seconds", "nan"], "seconds in (0, 60]"),
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


def test_every_verb_explains_itself(capsys):
    """``--help`` of every verb and sub-verb prints its help (``mrc --help`` was an internal error: a
    bare '%' in a help text, which argparse formats)."""
    from simulator import cli

    verbs = [[v] for v in cli.build_parser().verbs] + [["synth", "fit"], ["synth", "validate"]]
    for argv in verbs:
        with pytest.raises(SystemExit) as e:
            cli.build_parser().parse_args(argv + ["--help"])
        out, err = capsys.readouterr()
        assert e.value.code == 0 and f"usage: dipsim {' '.join(argv)}" in out and not err, argv


@pytest.mark.parametrize("argv", [["--version"], ["profiles"], ["trace-info", str(TRACE)]])
def test_output_that_cannot_be_written_gets_one_line(argv):
    """Standard output on a full device (``> /dev/full``): one line saying so, exit status 2 -- not an
    internal error, and not the exit status 0 of a command whose output was lost; a reader that goes
    away (``| head``) is no error."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "simulator.cli", *argv]
    with open("/dev/full", "w") as full:
        p = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == ["dipsim: error: cannot write the output to standard output: "
                                             "No space left on device"]
    p = subprocess.run(f"{' '.join(map(str, cmd))} | head -c 1 > /dev/null; exit ${{PIPESTATUS[0]}}", shell=True,
                       executable="/bin/bash", stderr=subprocess.PIPE, text=True, timeout=120)
    assert p.returncode == 0 and not p.stderr, p.stderr
    p = subprocess.run(f"exec {' '.join(map(str, cmd))} >&-", shell=True, executable="/bin/bash",
                       stderr=subprocess.PIPE, text=True, timeout=120)
    assert p.returncode == 0 and "Error" not in p.stderr, p.stderr   # closed: Python has no stdout (once tripped
    #                                                                   the flush; argparse's --version goes to stderr)


def test_a_quiet_sweep_says_nothing_but_its_error(d, capsys):
    """``sweep -q``: errors and the result only. The dense-baseline line came before the error of a
    sweep that failed at run time (a trace holding NaN, found when its first point read it), so
    the error was no longer the one line a script reads."""
    raw = bytearray((d / "t.safetensors").read_bytes())
    n = int.from_bytes(raw[:8], "little")
    raw[8 + n:] = b"\x00\x7e" * ((len(raw) - 8 - n) // 2)          # float16 NaN everywhere
    (d / "t.safetensors").write_bytes(bytes(raw))
    exp = yaml.safe_load((d / "exp.yaml").read_text())
    exp["base"]["device"] = "phone-12gb-ufs40"
    (d / "exp.yaml").write_text(yaml.safe_dump(exp))
    err = expect_error(capsys, ["sweep", str(d / "exp.yaml"), "--out", str(d / "out"), "-q"], d, "holds NaN/inf")
    assert len(err.strip().splitlines()) == 1, err
    shutil.copy(TRACE, d / "t.safetensors")
    rc, err = run_cli(capsys, ["sweep", str(d / "exp.yaml"), "--out", str(d / "out"), "-q"], d)
    assert rc == 0 and err == "", err


def test_a_seed_for_a_captured_trace_is_refused(d, capsys):
    """``trace --seed`` seeds a synthetic trace only; with a real model it did nothing, silently (the
    same for ``seed`` in an experiment's trace mapping)."""
    expect_error(capsys, ["trace", "--seed", "5", "--tokens", "8", "--out", str(d / "o.safetensors")], d,
                 "seed: seeds a synthetic trace (model synth:NAME); smollm2-135m is captured")
    exp = d / "seeded.yaml"
    exp.write_text(yaml.safe_dump({"trace": {"model": "smollm2-135m", "tokens": 8, "seed": 3}, "base": {"warmup": 2}}))
    expect_error(capsys, ["sweep", str(exp), "--dry-run"], d, "trace.seed: seeds a synthetic trace")
    exp.write_text(yaml.safe_dump({"trace": {"model": "synth:phi3-mini", "tokens": 8, "seed": 3},
                                   "base": {"warmup": 2}}))
    rc, _ = run_cli(capsys, ["sweep", str(exp), "--dry-run"], d)
    assert rc == 0


def test_a_corpus_too_short_for_any_token_says_so():
    """A one-token text file: 'ask for at most 0 with --tokens' asked for what --tokens refuses; the
    message now says why nothing can be recorded."""
    from traces.capture import tokenize_prefix
    from traces.corpus import Corpus

    def words(text, add_special_tokens):
        return {"input_ids": list(range(len(text.split())))}

    with pytest.raises(DipsimError, match=r"file:tiny.txt has only 1 tokens: too short for the 1 --tokens takes"):
        tokenize_prefix(words, Corpus("file:tiny.txt", "hi"), 9, reserve=1)
    with pytest.raises(DipsimError, match=r"has only 1 tokens: too short for the 2 --tokens takes at least$"):
        tokenize_prefix(words, Corpus("file:tiny.txt", "hi"), 9, least=2)      # eval's least (it said 'at most 1')
    with pytest.raises(DipsimError, match=r"has only 3 tokens; ask for at most 2 with --tokens"):
        tokenize_prefix(words, Corpus("file:small.txt", "a b c"), 9, reserve=1)
    assert tokenize_prefix(words, Corpus("file:small.txt", "a b c"), 3, reserve=1) == [0, 1, 2]


def test_trace_of_a_synthetic_model_does_what_its_help_says(d, capsys):
    """``trace --help`` offers ``--model synth:NAME`` (and ``--seed`` for it), which the verb refused as
    an unknown model; it now writes the trace ``synth --like NAME`` writes, and refuses the options
    of a capture, which would do nothing."""
    import traces

    out = d / "s.safetensors"
    rc, _ = run_cli(capsys, ["trace", "--model", "synth:phi3-mini", "--tokens", "4", "--seed", "3", "--out", str(out),
                             "-q"], d)
    t = traces.load(out)
    assert rc == 0 and t.n_tokens == 4 and t.meta["synth"]["seed"] == 3 and t.meta["model"] == "synth:phi3-mini"
    for extra, option in [(["--context", "8"], "--context"), (["--text", str(d / "exp.yaml")], "--text"),
                          (["--prefix-token", "bos"], "--prefix-token"), (["--no-h"], "--no-h"),
                          (["--no-g"], "--no-g"), (["--dtype", "float32"], "--dtype")]:
        expect_error(capsys, ["trace", "--model", "synth:phi3-mini", "--tokens", "4", "--out", str(d / "o.safetensors"),
                              *extra], d, f"{option} applies to a trace captured from a real model")
    expect_error(capsys, ["trace", "--model", "synth:nope", "--tokens", "4", "--out", str(d / "o.safetensors")], d,
                 "unknown synthetic model; allowed: synth:phi3-medium")


@pytest.mark.parametrize("name, what", [("points", "finished points"), ("dense", "dense baselines")])
def test_a_file_where_a_sweep_keeps_its_folders_gets_one_line(d, capsys, name, what):
    """A results folder whose points/ (or dense/) is a file: an internal error (FileExistsError)."""
    out = d / "out"
    out.mkdir()
    (out / "sweep.json").write_text("{}")
    (out / name).write_text("x")
    expect_error(capsys, ["sweep", str(d / "exp.yaml"), "--out", str(out), "-q"], d,
                 f"{out / name}: not a folder; a sweep keeps its {what} there")


def test_a_keep_for_dense_masking_is_refused(d, capsys):
    """``replay --masking dense --keep 0.3`` ran dense and reported keep 0.3 in its configuration."""
    t = str(d / "t.safetensors")
    for verb in (["replay", "--trace", t], ["mrc", "--trace", t, "--out", str(d / "m.csv")]):
        expect_error(capsys, [*verb, "--masking", "dense", "--keep", "0.3", "--warmup", "2"], d,
                     "--keep: masking policy 'dense' leaves every group dense, so --keep does not apply")
    rc, _ = run_cli(capsys, ["replay", "--trace", t, "--masking", "dense", "--keep", "1", "--warmup", "2", "-q"], d)
    assert rc == 0
