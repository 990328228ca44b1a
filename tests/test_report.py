"""dipsim report: the explorer's axes, budgets and tables from results tables, the CLI verb, the report
every sweep writes, and the page itself in a real browser (headless Chromium driven by Playwright)."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from common.errors import DipsimError
from simulator import report
from simulator.report.data import fmt, unit

from expected_replay import TRACE

#: the browser: $DIPSIM_CHROMIUM, else Debian's /usr/bin/chromium, else a chromium on the PATH
CHROMIUM = os.environ.get("DIPSIM_CHROMIUM") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium") or "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def table(**extra) -> pd.DataFrame:
    """A small results table: two devices, four methods, perplexity against its dense figure."""
    df = pd.DataFrame({
        "key": [f"p{i}#{i:010d}" for i in range(8)],
        "p.device": ["a"] * 4 + ["b"] * 4,
        "p.masking": ["dense", "dip", "dip-ca", "glu-prune"] * 2,
        "p.cache": ["lru"] * 8,
        "p.trace": [json.dumps({"model": "smollm2-135m", "tokens": 40})] * 8,
        "m.tokens_per_s": [100.0, 150.0, 300.0, 120.0, 40.0, 90.0, 180.0, 50.0],
        "m.perplexity": [12.0, 13.0, 30.0, 12.5, 12.0, 13.0, 30.0, 12.5],
        "m.dense_perplexity": [12.0] * 8,
        "m.hit_rate": np.linspace(0.5, 0.9, 8),
        "m.flash_bytes_per_token": np.linspace(1e6, 2e7, 8),
        "m.upgate.hit_rate": np.linspace(0.4, 0.8, 8),
    })
    for k, v in extra.items():
        df[k] = v
    return df


# ----------------------------------------------------------------------------------------- the data
def test_axes_losses_and_budgets():
    df = table()
    ax = report.choose_axes(df)
    assert (ax.speed, ax.accuracy, ax.dense, ax.higher, ax.measured) == \
        ("m.tokens_per_s", "m.perplexity", "m.dense_perplexity", False, True)
    loss = ax.loss(df)
    assert np.allclose(loss[:4], [0.0, 1 / 12, 1.5, 0.5 / 12])
    steps, start = report.budget_steps(ax, loss)
    assert steps == [0.0, round(0.5 / 12, 6), round(1 / 12, 6), 1.5, math.inf]
    assert steps[start] == round(1 / 12, 6)      # the largest budget within +10% of dense
    assert ax.budget_label(0.1) == "+10%" and ax.budget_label(math.inf) == "any"
    kl = report.choose_axes(df.drop(columns=["m.perplexity"]).assign(**{"m.kl_to_dense": loss}))
    assert (kl.accuracy, kl.dense, kl.budget_label(0.25)) == ("m.kl_to_dense", None, "kl_to_dense ≤ 0.25")
    top1 = report.choose_axes(df.assign(**{"m.top1_agreement": 0.9}), accuracy="top1_agreement")
    assert top1.higher and top1.budget_label(0.2) == "top1_agreement ≥ 0.8"
    none = report.choose_axes(df.drop(columns=["m.perplexity", "m.dense_perplexity"]))
    assert (none.accuracy, none.measured) == ("m.flash_bytes_per_token", False)
    assert report.budget_steps(none, none.loss(df)) == ([math.inf], 0)
    with pytest.raises(DipsimError, match="--speed: the table has no 'latency' figures; it has: "):
        report.choose_axes(df, speed="latency")
    with pytest.raises(DipsimError, match="none of the speed metrics"):
        report.choose_axes(df.drop(columns=["m.tokens_per_s", "m.hit_rate"]))


def test_units_and_formats_come_from_the_metric_table():
    assert unit("m.tokens_per_s") == "tokens/s" and unit("m.upgate.hit_rate") == "fraction"
    assert unit("m.perplexity_low") == "" and unit("m.tokens_per_s_high") == "tokens/s"
    assert fmt(2.5e7, "B/token") == "25 MB/token" and fmt(0.12345, "fraction") == "0.123"
    assert fmt(float("nan")) == "–" and fmt(True) == "yes" and fmt(2.0, "x") == "2×"


def test_the_page_is_self_contained_and_holds_tables_hover_and_intervals(tmp_path):
    df = table(**{"m.perplexity_low": [11.5, 12.5, 28, 12, 11.5, 12.5, 28, 12],
                  "m.perplexity_high": [12.5, 13.5, 32, 13, 12.5, 13.5, 32, 13]})
    out = report.write_report(df, tmp_path / "r.html", title="t", provenance={
        "command": "dipsim sweep e.yaml", "dipsim_version": "0.1.0",
        "traces": {"/x/t.safetensors": {"sha256": "ab" * 32}}})
    page = out.read_text()
    markup = re.sub(r"<script[^>]*>.*?</script>", "", page, flags=re.S)       # offline: nothing to fetch
    assert "<script src=" not in page and not re.search(r"(src|href)=", markup) and "<link" not in markup
    assert "Plotly.newPlot" in page and "dipsim sweep e.yaml" in page and "ab" * 32 in page
    data = json.loads(re.search(r'id="dipsim-data">(.*?)</script>', page, re.S).group(1))
    assert [p["f"]["model"] for p in data["points"]] == ["smollm2-135m"] * 8
    assert data["points"][2]["ylo"] == 28 and data["points"][2]["yhi"] == 32          # error bars
    assert [m[0] for m in data["menus"]] == ["device", "method"]                      # one cache, one model
    hover = data["hover"][1]
    assert "<b>p1</b>" in hover and "masking=dip" in hover and "hit_rate 0.557 ·" in hover
    assert "tokens_per_s 150 tokens/s" in hover and "8.33% worse than dense" in hover
    assert "flash_bytes_per_token 3.714 MB/token" in hover and "<i>upgate</i>: hit_rate 0.457" in hover
    # the fastest within +5% on device a is glu-prune (120 tokens/s at +4.2%), dip at +8.3% is not
    rows = re.findall(r"<tr><td>\+5%</td><td>a</td><td>smollm2-135m</td><td>([^<]*)</td>", page)
    assert rows == ["p3"]
    assert re.findall(r"<tr><td>any</td><td>b</td><td>smollm2-135m</td><td>([^<]*)</td>", page) == ["p6"]


def test_the_report_verb_and_its_errors(tmp_path, capsys):
    from simulator.cli import main

    df = table()
    df.to_parquet(tmp_path / "trials.parquet")
    assert main(["report", str(tmp_path / "trials.parquet")]) == 0
    assert (tmp_path / "trials.html").stat().st_size > 1e6 and "trials.html" in capsys.readouterr().out
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    (tmp_path / "t.csv").write_text("a\n")
    for argv, msg in [([str(tmp_path / "nope")], "results not found"),
                      ([str(tmp_path / "bad.parquet")], "not a readable parquet file"),
                      ([str(tmp_path / "t.csv")], "not a results table"),
                      ([str(tmp_path / "trials.parquet"), "--out", str(tmp_path / "r.png")], "unsupported file type"),
                      ([str(tmp_path / "trials.parquet"), "--accuracy", "mmlu"], "--accuracy: the table has no 'mmlu'")]:
        assert main(["report", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("dipsim: error: ") and msg in err and err.count("\n") == 1, err


def test_every_sweep_writes_provenance_and_a_report(tmp_path):
    from simulator import sweep
    from test_engine import device

    dev_file = str(device(tmp_path))
    exp = tmp_path / "e.yaml"
    exp.write_text(yaml.safe_dump({"name": "r", "trace": str(TRACE), "base": {"warmup": 4, "device": dev_file},
                                   "grid": {"masking": ["dip", "dense"]}}))
    r = subprocess.run([sys.executable, "-m", "simulator.cli", "sweep", str(exp), "--out", str(tmp_path / "out"), "-q"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"report:  {tmp_path / 'out' / 'report.html'}" in r.stdout
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert prov["command"] == f"dipsim sweep {exp} --out {tmp_path / 'out'} -q"
    assert prov["traces"][str(TRACE)]["sha256"] == __import__("hashlib").sha256(TRACE.read_bytes()).hexdigest()
    assert list(prov["profiles"][dev_file]["files"]) == [dev_file] and prov["experiment"]["points"] == 2
    page = (tmp_path / "out" / "report.html").read_text()
    assert "no accuracy in this table" in page and str(TRACE) in page
    assert sweep.load_results(tmp_path / "out").shape[0] == 2


# ----------------------------------------------------------------------------------------- the browser
def chromium():
    """Playwright's Chromium on Debian's browser binary, or a failure saying how to get it."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: install it with `apt-get install -y chromium` (or point "
                    f"DIPSIM_CHROMIUM at a Chromium binary)", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is not installed: pip install -r requirements.txt", pytrace=False)
    return sync_playwright, CHROMIUM


def fastest(df: pd.DataFrame, budget: float | None, device: str | None = None) -> str:
    """The key of the fastest row within a perplexity budget (relative to dense), computed here."""
    d = df if device is None else df[df["p.device"] == device]
    if budget is not None:
        d = d[d["m.perplexity"] / d["m.dense_perplexity"] - 1 <= budget + 1e-12]
    d = d.sort_values(["m.tokens_per_s", "m.perplexity"], ascending=[False, True])
    return d["key"].iloc[0]


@pytest.mark.slow
def test_the_report_in_a_real_browser(tmp_path):
    """A report built from a small sweep (accuracy in the loop, two devices), opened in headless
    Chromium: the points drawn, a hover label with the point's configuration, the budget slider moving
    the star, a device filter, no network request and no script error; a screenshot is kept."""
    from simulator import sweep

    sync_playwright, binary = chromium()
    exp = tmp_path / "e.yaml"
    exp.write_text(yaml.safe_dump({
        "name": "browser", "trace": {"model": "smollm2-135m", "tokens": 40},
        "base": {"keep": 0.5, "cache": "lru", "warmup": 4, "calib_tokens": 8, "accuracy": True, "accuracy_tokens": 24},
        "grid": {"device": ["phone-12gb-ufs40", "paper-a18"]},
        "zip": {"masking": ["dense", "dip", "dip", "dip-ca", "dip-ca", "glu-prune"],
                "keep": [1.0, 0.75, 0.5, 0.5, 0.5, 0.5], "gamma": [None, None, None, 0.2, 0.6, None]}}))
    out = tmp_path / "out"
    sweep.run_sweep(sweep.load_experiment(exp), out, progress=False)
    df = sweep.load_results(out)
    assert len(df) == 12
    page_file = out / "report.html"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1250})
        errors, requests = [], []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda r: requests.append(r.url) if not r.url.startswith("file://") else None)
        page.goto(page_file.as_uri())
        page.wait_for_selector("#explorer .scatterlayer .trace path.point")
        gd = page.locator("#explorer")
        traces = page.locator("#explorer .scatterlayer .trace")
        methods = json.loads(page.locator("#dipsim-data").text_content())["methods"]
        drawn = lambda: sum(traces.nth(i).locator("path.point").count() for i in range(len(methods)))  # noqa: E731
        assert drawn() == 12 and gd.get_attribute("data-shown") == "12"

        start = gd.get_attribute("data-best")
        loss = df["m.perplexity"] / df["m.dense_perplexity"] - 1
        assert start == fastest(df, loss[loss <= 0.1 + 1e-12].max().round(6))     # the largest budget within +10%
        point = traces.nth(methods.index("dip-ca")).locator("path.point").first
        box = point.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=4)
        label = page.locator("#explorer .hoverlayer .hovertext").first
        label.wait_for()
        text = label.text_content()
        assert "masking=dip-ca" in text and "gamma=" in text and "tokens_per_s" in text and "tokens/s" in text, text
        assert "MB/token" in text and "perplexity" in text
        assert "masking" in page.locator("#details").inner_text()
        page.screenshot(path=str(tmp_path / "report.png"))

        rail = page.locator("#explorer .slider-rail-touch-rect").bounding_box()
        page.mouse.click(rail["x"] + 2, rail["y"] + rail["height"] / 2)      # the tightest budget: +0%
        page.wait_for_function("document.getElementById('explorer').getAttribute('data-best') !== %s" % json.dumps(start))
        tight = gd.get_attribute("data-best")
        assert tight == fastest(df, 0.0) and "budget +0%" in page.locator("#best").inner_text()
        page.mouse.click(rail["x"] + rail["width"] - 2, rail["y"] + rail["height"] / 2)   # any budget
        page.wait_for_function("document.getElementById('explorer').getAttribute('data-best') !== %s" % json.dumps(tight))
        assert gd.get_attribute("data-best") == fastest(df, None)

        page.locator("#explorer .updatemenu-header").first.click()     # the device dropdown
        page.locator("#explorer .updatemenu-dropdown-button", has_text="device: paper-a18").click()
        page.wait_for_function("document.getElementById('explorer').getAttribute('data-shown') === '6'")
        assert drawn() == 6 and gd.get_attribute("data-best") == fastest(df, None, "paper-a18")
        assert not errors and not requests, (errors, requests)
        browser.close()
    shot = os.environ.get("DIPSIM_REPORT_SCREENSHOT")      # to refresh the picture in the README and the docs
    if shot:
        shutil.copy(tmp_path / "report.png", shot)
