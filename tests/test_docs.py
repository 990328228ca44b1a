"""The documentation site (mkdocs.yml, docs/): it builds with ``--strict`` (a broken link or anchor,
a page outside the navigation or an unknown generated part fails), and its generated reference holds
exactly the parameters, policies and metrics the code declares."""
from __future__ import annotations

import dataclasses
import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _hooks():
    spec = importlib.util.spec_from_file_location("dipsim_docs_hooks", ROOT / "docs" / "hooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.fail("mkdocs / mkdocs-material are not installed: pip install -r requirements.txt", pytrace=False)
    out = tmp_path_factory.mktemp("site")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def _first_cells(page: Path) -> set[str]:
    """The names in the first column of every table of a built page (``<td><code>NAME</code></td>``)."""
    text = page.read_text(encoding="utf-8")
    return {html.unescape(m) for m in re.findall(r"<tr>\s*<td><code>([^<]+)</code></td>", text)}


def test_the_site_builds_strictly_with_every_page_in_it(site):
    nav = re.findall(r":\s*([\w/-]+)\.md\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    for page in nav:
        built = site / ("index.html" if page == "index" else f"{page}/index.html")
        assert built.is_file(), page
        assert "<!-- generated:" not in built.read_text(encoding="utf-8"), page


def test_the_reference_lists_every_parameter_and_metric(site):
    from common.params import params_of
    from simulator import allocation, config, masking
    from simulator.metrics import METRICS

    declared = {f.name for c in (config.ReplayConfig, config.EngineConfig, config.LayoutConfig,
                                 config.AccuracyRun, config.TraceSpec) for f in params_of(c)}
    point = {f.name for f in dataclasses.fields(config.PointConfig)} - {"replay"}
    assert point == set(config.POINT_HELP)
    assert _first_cells(site / "reference/parameters/index.html") == declared | point
    assert _first_cells(site / "reference/metrics/index.html") == set(METRICS)
    policy_params = {p for n in masking.names() for p in masking.parameters(n)}
    policy_params |= {p for n in allocation.names() for p in allocation.parameters(n)}
    assert _first_cells(site / "reference/policies/index.html") == policy_params


def test_every_policy_verb_and_profile_has_its_section(site):
    from simulator import allocation, caches, masking
    from simulator.hardware.load import names

    policies = (site / "reference/policies/index.html").read_text(encoding="utf-8")
    for n in masking.names() + caches.names() + allocation.names():
        assert re.search(rf'<h3 id="[^"]*"><code>{re.escape(html.escape(n))}</code>', policies), n
    cli = (site / "reference/cli/index.html").read_text(encoding="utf-8")
    verbs = re.findall(r'<h2 id="[^"]*"><code>dipsim ([^<]+)</code>', cli)
    assert "sweep" in verbs and "report" in verbs and len(verbs) == len(set(verbs)) >= 10
    profiles = (site / "reference/profiles/index.html").read_text(encoding="utf-8")
    for kind in ("flash", "dram", "compute", "device"):
        for n in names(kind):
            assert re.search(rf"\b{re.escape(n)}\b", profiles), (kind, n)


def test_a_generated_part_is_named_and_an_unknown_one_refused():
    hooks = _hooks()
    assert "| `gamma` |" in hooks.render("<!-- generated: policies -->")
    with pytest.raises(ValueError, match="unknown generated part 'nope'; known: parameters"):
        hooks.render("text <!-- generated: nope -->", "how-to/x.md")

