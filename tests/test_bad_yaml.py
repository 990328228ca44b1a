"""Issue 22, the hangs: inputs that made dipsim run on without end, refused in one line at once.

YAML alias bombs and recursive aliases (one loader, ``common.plainyaml``, for experiments, hardware
profiles, ``eval --config`` and ``KEY=VALUE`` options), repeated keys, deep nesting, grids beyond
``MAX_POINTS``, ``--jobs`` beyond the machine, ``mrc --points`` beyond its cap. The interrupts of
calibrate and validate are in ``test_interrupts.py``.
"""
from __future__ import annotations

import time

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from badinput import expect_error, run_cli
from common import plainyaml
from common.errors import DipsimError
from expected_replay import TRACE


def bomb(levels: int = 9, fan: int = 10, key: str = "description") -> str:
    """``levels`` levels of ``fan`` aliases: fan^levels values in a few hundred bytes."""
    lines = ["x0: &a0 [x, y]"] + [f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\n{key}: *a{levels - 1}\n"


EXPERIMENT = {"name": "e", "trace": str(TRACE), "base": {"masking": "dip", "warmup": 4},
              "grid": {"dram_fraction": [0.25, 0.5]}}


def test_alias_bombs_are_refused_by_every_yaml_reader_within_seconds(tmp_path, capsys):
    exp = tmp_path / "exp.yaml"
    exp.write_text(bomb() + yaml.safe_dump(EXPERIMENT))
    prof = tmp_path / "p.yaml"
    prof.write_text(bomb(key="notes") + "kind: flash\nname: x\n")
    conf = tmp_path / "c.yaml"
    conf.write_text(bomb(key="label") + "masking: dip\n")
    t0 = time.perf_counter()
    for argv in (["sweep", str(exp), "--out", str(tmp_path / "out")], ["sweep", str(exp), "--dry-run"],
                 ["profiles", str(prof)], ["eval", "--config", str(conf), "--tokens", "16"],
                 ["eval", "--config", "{" + bomb(6, 10, "label").replace("\n", ", ").rstrip(", ") + "}"]):
        expect_error(capsys, argv, tmp_path, "aliases expand to more than 100,000 values")
    assert time.perf_counter() - t0 < 30


def test_recursive_aliases_and_deep_nesting_are_refused(tmp_path, capsys):
    exp = tmp_path / "exp.yaml"
    exp.write_text("zz: &r [1, *r]\n" + yaml.safe_dump(EXPERIMENT))
    expect_error(capsys, ["sweep", str(exp)], tmp_path, "refers to a list or mapping that contains it")
    for text in ("{" * 5000, '{"a":' * 5000 + "1" + "}" * 5000, "[" * 100_000):
        expect_error(capsys, ["eval", "--config", text], tmp_path, "nested deeper than the limit of 12 levels")
    prof = tmp_path / "p.yaml"
    prof.write_text("[" * 5000)
    expect_error(capsys, ["profiles", str(prof)], tmp_path, "nested deeper")


@pytest.mark.parametrize("edit, line", [
    (lambda t: t + "name: other\n", "key 'name' given twice"),
    (lambda t: t.replace("  warmup: 4\n", "  warmup: 4\n  warmup: 8\n"), "key 'warmup' given twice"),
    (lambda t: t + "  dram_fraction: [0.75]\n", "key 'dram_fraction' given twice"),
])
def test_repeated_keys_are_refused_not_silently_overwritten(tmp_path, capsys, edit, line):
    exp = tmp_path / "exp.yaml"
    exp.write_text(edit(yaml.safe_dump(EXPERIMENT, sort_keys=False)))
    expect_error(capsys, ["sweep", str(exp), "--dry-run"], tmp_path, line)


def test_repeated_keys_in_profiles_and_configurations(tmp_path, capsys):
    prof = tmp_path / "p.yaml"
    prof.write_text("kind: flash\nname: x\nunits: 2\nunits: 3\n")
    expect_error(capsys, ["profiles", str(prof)], tmp_path, "key 'units' given twice in one mapping")
    expect_error(capsys, ["eval", "--config", "{masking: dip, masking: dense}"], tmp_path, "key 'masking' given twice")


# a property of the loader: plain data round-trips, whatever its shape (within the limits)
TEXT = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"))   # PyYAML itself folds control characters
PLAIN = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10 ** 9, 10 ** 9),
                               st.floats(allow_nan=False, allow_infinity=False), st.text(TEXT, max_size=20)),
                     lambda inner: st.one_of(st.lists(inner, max_size=4),
                                             st.dictionaries(st.text(TEXT, min_size=1, max_size=8), inner, max_size=4)),
                     max_leaves=30)


@settings(max_examples=200)
@given(data=PLAIN, flow=st.booleans())
def test_plain_data_reads_back_as_written(data, flow):
    text = yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True)
    try:
        assert plainyaml.load(text, "x") == data
    except DipsimError as e:      # only the depth limit may refuse plain data
        assert "nested deeper" in str(e)


def test_the_loader_keeps_what_yaml_users_write():
    assert plainyaml.load("d: 2001-12-14\n", "x") == {"d": "2001-12-14"}          # dates stay text
    assert plainyaml.load("b: &b {x: 1}\nc: {<<: *b, y: 2}\n", "x")["c"] == {"x": 1, "y": 2}   # merge keys
    assert plainyaml.load("a: &a [1, 2]\nb: *a\n", "x") == {"a": [1, 2], "b": [1, 2]}  # small aliases
    with pytest.raises(DipsimError, match="x: line 1: the YAML tag tag:yaml.org,2002:binary is not plain data"):
        plainyaml.load("a: !!binary aGVsbG8=\n", "x")
    with pytest.raises(DipsimError, match="not plain data"):
        plainyaml.load("a: !!python/object:os.system ls\n", "x")


# ----------------------------------------------------------------------------------------- sizes of work
def test_a_grid_beyond_the_cap_is_refused_before_it_is_expanded(tmp_path, capsys):
    from simulator.sweep.experiment import MAX_POINTS

    vals = [round(0.001 + i * 0.99 / 1000, 6) for i in range(1000)]
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({**EXPERIMENT, "grid": {"dram_fraction": vals, "keep": vals, "gamma": vals}}))
    t0 = time.perf_counter()
    err = expect_error(capsys, ["sweep", str(exp), "--dry-run"], tmp_path,
                       f"the axes expand to 1,000,000,000 points (1000 dram_fraction x 1000 gamma x 1000 keep); "
                       f"the limit is {MAX_POINTS:,} points")
    assert time.perf_counter() - t0 < 5 and len(err) < 300


def test_the_cap_counts_traces_grid_and_zip(tmp_path, capsys, monkeypatch):
    from simulator.sweep import experiment

    monkeypatch.setattr(experiment, "MAX_POINTS", 12)
    exp = tmp_path / "exp.yaml"
    body = {**EXPERIMENT, "trace": None, "traces": [str(TRACE)] * 2, "grid": {"dram_fraction": [0.25, 0.5, 0.75]},
            "zip": {"keep": [0.25, 0.5], "warmup": [2, 4]}}
    del body["trace"]
    exp.write_text(yaml.safe_dump(body))
    assert len(experiment.load_experiment(exp).points) == 6        # 2 traces x 3 x 2, the same trace: 6 points
    body["zip"] = {"keep": [0.25, 0.5, 0.75], "warmup": [2, 4, 6]}
    exp.write_text(yaml.safe_dump(body))
    with pytest.raises(DipsimError, match=r"18 points \(2 traces x 3 dram_fraction x 3 zip\(keep, warmup\)\)"):
        experiment.load_experiment(exp)


def test_jobs_beyond_the_machine_are_refused_and_idle_workers_not_started(tmp_path, capsys, monkeypatch):
    from common.params import max_workers
    from simulator.sweep import run

    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump(EXPERIMENT))
    expect_error(capsys, ["sweep", str(exp), "--out", str(tmp_path / "o"), "--jobs", "100000"], tmp_path,
                 f"--jobs 100000: more worker processes than this machine runs usefully (at most {max_workers()}")
    expect_error(capsys, ["sweep", str(exp), "--out", str(tmp_path / "o"), "--scheduler", "tcp://127.0.0.1:1"],
                 tmp_path, "--scheduler tcp://127.0.0.1:1 applies to --executor dask only")
    started = []

    class Pool:                       # records how many workers the sweep asks for, runs nothing
        def __init__(self, n, initializer=None):
            started.append(n)
            raise KeyboardInterrupt

    monkeypatch.setattr("concurrent.futures.ProcessPoolExecutor", Pool)
    with pytest.raises(KeyboardInterrupt):
        run._run_pool([[object()], [object()]], 8)
    assert started == [2]             # two tasks, two workers, whatever --jobs says


def test_mrc_points_are_capped(tmp_path, capsys):
    from simulator.cli.mrc import MAX_POINTS

    expect_error(capsys, ["mrc", "--trace", str(TRACE), "--points", "100000", "--out", str(tmp_path / "m.csv")],
                 tmp_path, f"expected a whole number in [2, {MAX_POINTS}], got '100000'")
    rc, _ = run_cli(capsys, ["mrc", "--trace", str(TRACE), "--points", "3", "--warmup", "2", "--out",
                             str(tmp_path / "m.csv"), "-q", "--no-opt"], tmp_path)
    assert rc == 0 and len((tmp_path / "m.csv").read_text().splitlines()) == 4


@pytest.mark.parametrize("char", ["\x00", "\x07", "\ufffe"])
def test_control_characters_in_yaml_get_one_line(tmp_path, capsys, char):
    """A NUL byte (or another character YAML does not allow) in an experiment, a profile or a
    configuration: the YAML reader refuses it when it is made, which was outside the loader's error
    handling (an internal error 'ReaderError')."""
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump(EXPERIMENT) + f"description: a{char}b\n")
    expect_error(capsys, ["sweep", str(exp), "--out", str(tmp_path / "out")], tmp_path, "not valid YAML")
    prof = tmp_path / "p.yaml"
    prof.write_text(f"kind: device\nname: x{char}\n")
    expect_error(capsys, ["profiles", str(prof)], tmp_path, "not valid YAML")
    expect_error(capsys, ["eval", "--config", f"{{masking: dip{char}}}", "--tokens", "8"], tmp_path, "not valid YAML")


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".", "a\x00b", "n" * 300])
def test_an_experiment_name_is_a_folder_name_not_a_path(tmp_path, capsys, monkeypatch, name):
    """The name makes the default results folder (results/<name>): '../escape' wrote its results
    beside results/, a NUL or 300 characters were internal errors after the folder was made."""
    monkeypatch.chdir(tmp_path)
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({**EXPERIMENT, "name": name}))
    expect_error(capsys, ["sweep", str(exp), "-q"], tmp_path, "'name' must be a plain folder name")


def test_eval_configurations_are_capped_before_they_are_built(tmp_path, capsys):
    """300 --gamma values x 30 --keep values (9,000 forwards of the model) or a --config file of 4,000
    entries ran on for hours with no output under -q; the product is counted before it is built."""
    from simulator.cli.eval import MAX_CONFIGS

    many = sum([["--gamma", f"{i / 1000:g}"] for i in range(300)], []) + \
        sum([["--keep", f"{(i + 1) / 100:g}"] for i in range(30)], [])
    t0 = time.monotonic()
    expect_error(capsys, ["eval", "--tokens", "24", "--masking", "dip-ca", *many, "-q"], tmp_path,
                 f"the repeated options make 9,000 configurations; eval runs at most {MAX_CONFIGS:,}")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("".join(f"- {{masking: dip, keep: {(i + 1) / 5000:.4f}}}\n" for i in range(4000)))
    expect_error(capsys, ["eval", "--tokens", "24", "--config", str(cfg), "-q"], tmp_path,
                 "--config entries make 4,000 configurations")
    assert time.monotonic() - t0 < 30
