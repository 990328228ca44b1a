"""Output paths: bad ones fail in one line before any work, and nothing half-written is left behind."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.errors import DipsimError
from common.io import atomic, check_file, check_folder

from expected_replay import TRACE


def _cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simulator.cli", *map(str, args)], capture_output=True, text=True,
                          **kw)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*part*"))


def test_check_file_and_folder(tmp_path):
    assert check_file(tmp_path / "new" / "deeper" / "x.csv", "--out") == tmp_path / "new" / "deeper" / "x.csv"
    assert not (tmp_path / "new").exists()           # checking creates nothing: a failing run leaves no folder
    with pytest.raises(DipsimError, match="is a directory"):
        check_file(tmp_path, "--out")
    with pytest.raises(DipsimError, match=r"unsupported file type '\.xyz'; allowed: \.png"):
        check_file(tmp_path / "a.xyz", "--plot", (".png", ".pdf"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(DipsimError, match="file is not a folder"):
        check_file(tmp_path / "file" / "x.csv", "--out")
    with pytest.raises(DipsimError, match="exists and is not a folder"):
        check_folder(tmp_path / "file", "--out")


def test_atomic_replaces_on_success_and_removes_on_failure(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with atomic(target) as tmp:
        assert tmp.suffix == ".txt" and tmp.name.startswith(".")
        tmp.write_text("new")
        assert target.read_text() == "old"          # nothing visible until complete
    assert target.read_text() == "new"
    for exc in (ValueError, KeyboardInterrupt):
        with pytest.raises(exc):
            with atomic(target) as tmp:
                tmp.write_text("half")
                raise exc()
        assert target.read_text() == "new" and _leftovers(tmp_path) == []


@pytest.mark.parametrize("args, message", [
    (["mrc", "--trace", TRACE, "--masking", "dip", "--points", "1", "--out", "{d}/m.csv"], "--points: expected a whole number in [2, 1001]"),
    (["mrc", "--trace", TRACE, "--masking", "dip", "--out", "{d}/m.csv", "--plot", "{d}/m"], "unsupported file type"),
    (["mrc", "--trace", TRACE, "--masking", "dip", "--out", "{d}"], "is a directory"),
    (["replay", "--trace", TRACE, "--masking", "dip", "--save-log", "{d}"], "--save-log"),
    (["replay", "--trace", TRACE, "--masking", "dip", "--profile", "paper-a18", "--chrome-trace", "{d}"],
     "--chrome-trace"),
    (["trace", "--model", "smollm2-135m", "--tokens", "16", "--out", "{d}"], "is a directory"),
    (["calibrate", "--file", "{d}/data.bin", "--out", "{d}/p.txt"], "allowed: .yaml, .yml"),
    (["sweep", "{d}/exp.yaml", "--out", "{d}/exp.yaml"], "exists and is not a folder"),
])
def test_bad_output_paths_fail_in_one_line_before_work(tmp_path, args, message):
    (tmp_path / "exp.yaml").write_text(f"name: tiny\ntrace: {TRACE}\nbase: {{masking: dip, keep: 0.5}}\n"
                                       f"grid: {{dram_fraction: [0.25, 0.5]}}\n")
    r = _cli(*[str(a).format(d=tmp_path) for a in args])
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("dipsim: error:") and message in r.stderr, r.stderr
    assert _leftovers(tmp_path) == [] and not (tmp_path / "data.bin").exists()


def test_plot_with_a_bad_suffix_fails_before_reading_results(tmp_path):
    r = _cli("plot", tmp_path / "no-such-results", "--out", tmp_path / "fig")
    assert r.returncode == 2 and "unsupported file type" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.slow
def test_sigterm_during_capture_keeps_a_valid_trace_and_no_temporary_file(tmp_path, smollm2):
    import traces

    out = tmp_path / "long.safetensors"       # x only: 0.7 GB for 20,000 tokens (with h and g, 4.4 GB of free disk needed)
    proc = subprocess.Popen([sys.executable, "-m", "simulator.cli", "trace", "--model", "smollm2-135m",
                             "--tokens", "20000", "--no-h", "--no-g", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 240
    while not _leftovers(tmp_path) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(3)                                   # let it finish a chunk or two
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err              # 128 + SIGTERM, as a shell reports it
    assert _leftovers(tmp_path) == []
    assert "interrupted" in err and "Traceback" not in err
    if out.exists():                                # the finished tokens were saved as a complete, shorter trace
        t = traces.load(out)
        assert 0 < t.n_tokens < 20000 and f"saved the {t.n_tokens} tokens" in err


def test_sigterm_stops_a_parallel_sweep_promptly_and_keeps_finished_points(tmp_path, smol_trace_path):
    import pandas as pd

    exp = tmp_path / "many.yaml"
    exp.write_text(f"name: many\ntrace: {smol_trace_path}\nbase: {{masking: dip-ca, keep: 0.5, device: paper-a18}}\n"
                   f"grid: {{gamma: [{', '.join(str(g / 40) for g in range(41))}], dram_fraction: [0.2, 0.4, 0.6]}}\n")
    out = tmp_path / "res"
    proc = subprocess.Popen([sys.executable, "-m", "simulator.cli", "sweep", str(exp), "--out", str(out), "--jobs", "2",
                             "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (out / "results.parquet").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, "the sweep finished before it could be interrupted; make it longer"
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert time.time() - t0 < 15, "the sweep ran on after SIGTERM"
    assert proc.returncode == 143, err
    rows = pd.read_parquet(out / "results.parquet")
    assert 0 < len(rows) < 123
    assert _leftovers(tmp_path) == []
