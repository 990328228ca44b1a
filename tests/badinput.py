"""What every bad-input test checks, shared by the fuzz tests (``test_bad_input.py``) and the named
regressions of each family of issue 22 (``test_bad_*.py``).

``run_cli`` runs ``dipsim argv`` in-process under a 60 s alarm and asserts the contract: exit status 0
(the input happened to be valid), or 2 with exactly one line on stderr that begins
``dipsim: error:`` and is at most ``MAX_LINE`` characters -- never an internal error or a traceback,
never a file created or changed in the watched folder, never a hidden temporary file left behind,
whatever the status. ``corrupt_method_meta`` and ``rewrite_meta`` make damaged method files and
traces from valid ones.
"""
from __future__ import annotations

import json
import shutil
import signal
import struct
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from hypothesis import strategies as st

from expected_replay import TRACE

MAX_LINE = 500
PROFILES = Path(__file__).resolve().parent.parent / "hardware_profiles"

BAD_VALUES = st.one_of(
    st.sampled_from([None, True, False, 0, -1, -0.5, 1.5, 2, 1e30, 10 ** 12, float("nan"), float("inf"),
                     float("-inf"), "", "x", "maybe", "2001-12-14", "1e9", "12 GB", "-3 MB", "0x10", "[]", "{}",
                     "dip", "lru2", "\u00e9\u00e8", "a" * 300, "a" * 3000]),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.sampled_from(["a", "keep", "mode", "value"]), st.integers(-2, 2), max_size=2),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-10 ** 6, 10 ** 6),
)


@contextmanager
def scratch() -> Iterator[Path]:
    """A folder for one generated case, removed afterwards (``DIPSIM_FUZZ=2000`` draws 16,000 cases,
    some of which write traces: kept, they filled gigabytes of the shared disk)."""
    d = Path(tempfile.mkdtemp(prefix="dipsim-fuzz-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def snapshot(d: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``d`` (hidden ones too): size and content."""
    out = {}
    for p in d.rglob("*"):
        try:
            out[str(p.relative_to(d))] = (p.lstat().st_size, p.read_bytes() if p.is_file() and not p.is_symlink()
                                          else b"")
        except OSError:
            continue
    return out


def leftovers(d: Path) -> list[str]:
    """Hidden temporary files and scratch folders that no finished command may leave."""
    return sorted(str(p.relative_to(d)) for p in d.rglob("*")
                  if ".part-" in p.name or p.name == "dask-scratch-space" or p.name.startswith(".dipsim-probe"))


def run_cli(capsys, argv: list[str], watch: Path, *, seconds: int = 60) -> tuple[int, str]:
    """Run ``dipsim argv`` in-process under an alarm; return (status, stderr) after checking the
    contract above (``watch``: the folder whose files must not change unless the command succeeded)."""
    from simulator import cli

    before = snapshot(watch)

    def timeout(signum, frame):
        raise TimeoutError(f"dipsim {' '.join(argv)[:300]} ran for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        rc = cli.main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("dipsim: warning:")]
    shown = " ".join(argv)[:300]
    assert "Traceback" not in err and "internal error" not in err, (shown, err)
    assert leftovers(watch) == [], (shown, leftovers(watch))
    if rc != 0:
        assert rc == 2, (shown, err)
        assert len(lines) == 1 and lines[0].startswith("dipsim: error:"), (shown, err)
        assert len(lines[0]) <= MAX_LINE, (shown, len(lines[0]))
        assert snapshot(watch) == before, f"dipsim {shown} failed but changed files: {err}"
    return rc, err


def expect_error(capsys, argv: list[str], watch: Path, message: str) -> str:
    """``dipsim argv`` fails in one line containing ``message`` and touches nothing."""
    rc, err = run_cli(capsys, argv, watch)
    assert rc == 2 and message in err, (argv, err)
    return err


def rewrite_meta(src: Path, dst: Path, edit: Callable[[dict, dict], Any], key: str = "dipsim") -> None:
    """Copy the safetensors file ``src`` to ``dst`` with ``edit(meta, header)`` applied to the JSON
    metadata under ``__metadata__[key]`` (``dipsim`` for traces, ``dipsim_method`` for method files)."""
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = json.loads(header["__metadata__"][key])
    edit(meta, header)
    header["__metadata__"][key] = json.dumps(meta)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    dst.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])


def without_tensors(src: Path, dst: Path) -> None:
    """Copy the method file ``src`` to ``dst`` with its metadata and no tensors (no tensor data either:
    data after the last tensor is a damage of its own)."""
    rewrite_meta(src, dst, lambda m, h: [h.pop(k) for k in list(h) if k != "__metadata__"], "dipsim_method")
    raw = dst.read_bytes()
    dst.write_bytes(raw[:8 + struct.unpack("<Q", raw[:8])[0]])


def trace_dims() -> dict[str, Any]:
    import traces

    meta = traces.load(TRACE).meta
    return {k: meta[k] for k in ("model", "n_layers", "d_model", "d_ff")}


def method_files(d: Path) -> dict[str, Path]:
    """A valid variant, adapter and predictor made for the committed test trace, in ``d``."""
    import numpy as np

    from common import store

    dims = trace_dims()
    L, dm, dff = dims["n_layers"], dims["d_model"], dims["d_ff"]
    paths = {"variant": d / "variant.safetensors", "adapter": d / "adapter.safetensors",
             "predictor": d / "pred.safetensors"}
    store.save(paths["variant"], {"x": np.zeros(2, np.float32)},
               {"kind": "variant", **dims, "method": "magnitude", "sparsity": 0.5,
                "bytes": {"dense_per_weight": 0.625, "bitmask_per_weight": 0.4375, "index16_per_weight": 1.3125}})
    store.save(paths["adapter"], {"layers.0.mlp.up_proj.lora_A": np.zeros((4, dm), np.float32),
                                  "layers.0.mlp.up_proj.lora_B": np.zeros((dff, 4), np.float32)},
               {"kind": "adapter", **dims, "rank": 4, "alpha": 8.0, "targets": ["mlp"], "params": 4 * (dm + dff),
                "fp16_bytes": 8.0 * (dm + dff)})
    params = {"mu": np.zeros((L, dm), np.float32), "sd": np.ones((L, dm), np.float32)}
    for layer in range(L):
        params.update({f"down.{layer}.w1": np.zeros((2, dm), np.float32), f"down.{layer}.b1": np.zeros(2, np.float32),
                       f"down.{layer}.w2": np.zeros((dff, 2), np.float32),
                       f"down.{layer}.b2": np.zeros(dff, np.float32)})
    store.save(paths["predictor"], params, {"kind": "predictor", **dims, "heads": ["down"], "rank": 2})
    return paths
