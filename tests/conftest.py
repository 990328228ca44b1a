"""Shared fixtures: the real SmolLM2 model and a short trace of it, loaded once per test session; the
named models the model-family tests run on (``named_model``), and the report of which ones ran."""
from __future__ import annotations

import gc
import os
import signal
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

import hypothesis  # noqa: E402

hypothesis.settings.register_profile("dipsim", deadline=None, derandomize=True, print_blob=True)
hypothesis.settings.load_profile("dipsim")

DATA = Path(__file__).parent / "data"

#: every named model, with the facts its GGUF header gives (docs/how-to/models.md): the model-family tests
#: run on each one installed -- SmolLM2 and Gemma-3 always (set-up installs them), the Qwen models
#: when ``python3 tasks.py model NAME`` installed them
NAMED_MODELS = {
    "smollm2-135m": dict(architecture="llama", n_layers=30, d_model=576, d_ff=1536, add_bos=False),
    "gemma3-270m": dict(architecture="gemma3_text", n_layers=18, d_model=640, d_ff=2048, add_bos=True),
    "qwen2.5-0.5b": dict(architecture="qwen2", n_layers=24, d_model=896, d_ff=4864, add_bos=False),
    "qwen2.5-coder-1.5b": dict(architecture="qwen2", n_layers=28, d_model=1536, d_ff=8960, add_bos=False),
}
#: models a run must test, not skip (``.ci/run`` sets it: CI fails if one of them is not installed)
EXPECT_ENV = "DIPSIM_EXPECT_MODELS"
_STATUS: dict[str, str] = {}          # model -> "tested", or why it was skipped
_LOADED: dict[str, object] = {}       # the one named model held (besides the smollm2 fixture)


def expected_models() -> list[str]:
    return [m.strip() for m in os.environ.get(EXPECT_ENV, "").split(",") if m.strip()]


def installed_or_skip(name: str) -> None:
    """Skip with the model's one-line install message when it is not installed -- or fail, when this
    run expects it (``DIPSIM_EXPECT_MODELS``)."""
    from common.errors import DipsimError
    from traces.models import check_available

    try:
        check_available(name)
    except DipsimError as e:
        _STATUS.setdefault(name, str(e))
        if name in expected_models():
            pytest.fail(f"{name} is expected ({EXPECT_ENV}) but cannot be tested: {e}")
        pytest.skip(str(e))


def named_lm(name: str, smollm2=None):
    """A named model, loaded once and held until another one is asked for (one at a time: memory)."""
    from traces.models import load_model

    installed_or_skip(name)
    if name == "smollm2-135m" and smollm2 is not None:
        lm = smollm2
    elif name in _LOADED:
        lm = _LOADED[name]
    else:
        _LOADED.clear()
        gc.collect()
        lm = _LOADED[name] = load_model(name, verbose=False)
    _STATUS[name] = "tested"
    return lm


@pytest.fixture(scope="session", params=list(NAMED_MODELS))
def named_model(request, smollm2):
    """Each installed named model in turn (the tests that should hold for every model family)."""
    return named_lm(request.param, smollm2)


@pytest.fixture(scope="session")
def smollm2():
    from traces.models import load_model

    return load_model("smollm2-135m", verbose=False)


@pytest.fixture(scope="session")
def smol_trace_path(smollm2, tmp_path_factory) -> Path:
    """A 200-token SmolLM2 trace with a window of 96 positions (so several windows are stitched)."""
    import traces

    out = tmp_path_factory.mktemp("trace") / "smol.safetensors"
    return traces.capture(smollm2, out, tokens=200, context=96, progress=False)


@pytest.fixture(scope="session")
def smol_trace(smol_trace_path):
    import traces

    return traces.load(smol_trace_path)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ------------------------------------------------------------------------------------ named-model report
_SELECTED = {"named": False}


def pytest_collection_finish(session):
    """Whether the run selected any model-family test (after -m / -k deselection)."""
    _SELECTED["named"] = any("named_model" in getattr(item, "fixturenames", ()) for item in session.items)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Which named models the run tested and which it skipped, and whether the expected ones ran."""
    if not (_STATUS or (_SELECTED["named"] and expected_models())):
        return
    tested = [m for m in NAMED_MODELS if _STATUS.get(m) == "tested"]
    skipped = {m: why for m, why in _STATUS.items() if why != "tested"}
    terminalreporter.write_sep("-", "named models")
    terminalreporter.write_line(f"tested: {', '.join(tested) or 'none'}")
    for m, why in skipped.items():   # the install message without its list of missing packages
        short = why.split(" (missing")[0] + ("; " + why.rsplit("; ", 1)[1] if "; install" in why else "")
        terminalreporter.write_line(f"skipped: {m} ({short})")
    missing = [m for m in expected_models() if _STATUS.get(m) != "tested"]
    if expected_models():
        terminalreporter.write_line(f"expected ({EXPECT_ENV}): {', '.join(expected_models())}: "
                                    + (f"NOT TESTED: {', '.join(missing)}" if missing else "all tested"))


def pytest_sessionfinish(session, exitstatus):
    """A run that selected the model-family tests fails if a model it expects was not tested."""
    if _SELECTED["named"] and any(_STATUS.get(m) != "tested" for m in expected_models()) and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config):
    """Ctrl-C as a terminal gives it, to the suite and every command it starts. A suite started as a
    background job without job control (``.ci/run > log &`` in a script) ignores SIGINT, every process
    it starts inherits that, and dipsim rightly keeps an ignored SIGINT ignored (``nohup``): every
    Ctrl-C test failed. A handled signal is reset to its default in a child, so they get Ctrl-C too."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
