"""Shared fixtures: the real SmolLM2 model and a short trace of it, loaded once per test session."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

import hypothesis  # noqa: E402

hypothesis.settings.register_profile("dipsim", deadline=None, derandomize=True, print_blob=True)
hypothesis.settings.load_profile("dipsim")

DATA = Path(__file__).parent / "data"


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
