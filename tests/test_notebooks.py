"""Execute every notebook in notebooks/ in its SMALL configuration (a few points of 128 tokens).

The kernel is this interpreter: a kernel spec written to a temporary directory runs ``sys.executable``,
so the test does not depend on which ``python3`` kernel Jupyter would find (a user-level spec can point
at another Python) and works on a fresh machine where only the virtualenv exists. Parameters reach the
notebooks through the environment (DIPSIM_NB_SMALL, DIPSIM_NB_OUT), which the kernel inherits.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds per cell


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("kernels")
    spec = d / "dipsim-test"
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "dipsim (test interpreter)",
        "language": "python",
    }))
    return d


def test_there_are_notebooks():
    names = {p.stem for p in NOTEBOOKS}
    assert {"gamma_tradeoff", "sparsity_tradeoff", "hardware_comparison", "your_own_policy"} <= names, names


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, kernel_dir: Path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    monkeypatch.setenv("DIPSIM_NB_SMALL", "1")
    monkeypatch.setenv("DIPSIM_NB_OUT", str(tmp_path / "out"))
    monkeypatch.delenv("DIPSIM_NB_RESULTS", raising=False)
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiet the debugger's frozen-modules note

    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "parameters" in first.metadata.get("tags", []), "the first code cell must be tagged 'parameters'"
    for name in ("RESULTS", "SMALL", "OUT"):
        assert f"{name} =" in first.source, f"the parameters cell sets no {name}"
    # one extra cell: which interpreter and which parameters the kernel really had
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint(repr((sys.prefix, SMALL, str(OUT))))"))

    km = AsyncKernelManager(kernel_name="dipsim-test", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))
    client = nbclient.NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, allow_errors=False,
                                     resources={"metadata": {"path": str(ROOT)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:  # the traceback of the failing cell, without ANSI noise
        import re

        msg = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
        pytest.fail(f"{path.name}: a cell failed:\n{msg}", pytrace=False)

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    check = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream").strip()
    assert check == repr((sys.prefix, True, str(tmp_path / "out"))), check
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert images, f"{path.name} produced no image/png display_data"
    assert (tmp_path / "out").is_dir() and any((tmp_path / "out").rglob("results.parquet")), \
        "the notebook did not write its sweep under DIPSIM_NB_OUT"
