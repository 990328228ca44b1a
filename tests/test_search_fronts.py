"""A search split by ``search.each`` (one study per variant) and its fronts side by side: the variants,
their spaces, the checks, and fronts.png with one front per method in every panel (fake trial
metrics, ``search_fake``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import search_fake
from common.errors import DipsimError
from simulator.plots.search import method_fronts
from simulator.search import load_searches, nondominated, run_variants
from simulator.search.fronts import _dominates

DEVICES = ["paper-a18", "phone-12gb-ufs40"]
METHODS = ["dense", "dip", "dip-ca", "glu-prune"]


def write_exp(folder: Path, search: dict, traces=None, name: str = "f") -> Path:
    doc = {"name": name, "traces": traces or [{"model": "smollm2-135m", "tokens": 64}],
           "base": {"cache": "lru", "device": "paper-a18", "accuracy": True, "dram_fraction": 0.5}, "search": search}
    p = folder / f"{name}.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


SEARCH = {"each": {"device": DEVICES, "masking": METHODS},
          "space": {"keep_up": {"low": 0.2, "high": 1.0}, "keep_down": {"low": 0.2, "high": 1.0},
                    "gamma": {"low": 0.0, "high": 1.0}},
          "constraints": {"max_perplexity_increase": 0.5}, "trials": 5}


def test_each_makes_one_study_per_variant_searching_what_applies(tmp_path):
    traces = [{"model": "smollm2-135m", "tokens": 64}, {"model": "smollm2-135m", "tokens": 32}]
    variants = load_searches(write_exp(tmp_path, SEARCH, traces))
    assert [v.name for v in variants] == [f"smollm2-135m-{t} / {d} / {m}" for t in (64, 32) for d in DEVICES
                                          for m in METHODS]
    dims = {v.labels["masking"]: [d.name for d in v.search.dims] for v in variants}
    assert dims == {"dense": [], "dip": ["keep_up", "keep_down"], "dip-ca": ["keep_up", "keep_down", "gamma"],
                    "glu-prune": ["keep_down"]}
    assert {v.labels["masking"]: v.search.trials for v in variants} == {"dense": 1, "dip": 5, "dip-ca": 5,
                                                                        "glu-prune": 5}
    assert {(v.search.base["device"], v.search.base["masking"]) for v in variants} == \
        {(d, m) for d in DEVICES for m in METHODS}
    assert variants[-1].folder == Path("smollm2-135m-32", "phone-12gb-ufs40", "glu-prune")


def test_a_mapping_value_sets_several_keys(tmp_path):
    search = {**SEARCH, "each": {"masking": ["dip", {"masking": "powerinfer", "cache": "pinned", "oracle": True}]},
              "space": {"keep": {"low": 0.3, "high": 1.0}}}
    v = load_searches(write_exp(tmp_path, search))
    assert [x.name for x in v] == ["dip", "powerinfer"]
    assert (v[1].search.base["cache"], v[1].search.base["oracle"]) == ("pinned", True)


@pytest.mark.parametrize("each, space, match", [
    ({"trace": ["a"]}, None, r"search\.each\.trace: list the traces under 'traces:'"),
    ({"maskin": ["dip"]}, None, r"search\.each: unknown key 'maskin'"),
    ({"masking": []}, None, r"search\.each\.masking: expected a non-empty list"),
    ({"masking": [{"cache": "pinned"}]}, None, r"search\.each\.masking: a mapping value must hold 'masking'"),
    ({"masking": ["dip", "nope"]}, None, r"unknown masking policy 'nope'"),
    ({"masking": ["dip", "glu-prune"]}, {"gamma": {"low": 0, "high": 1}},
     r"search\.space\.gamma: no variant of search\.each takes it"),
    ({"masking": ["dip", "dip"]}, None, r"search\.each: two variants are both named 'dip'"),
])
def test_bad_each_names_file_and_key(tmp_path, each, space, match):
    search = {**SEARCH, "each": each, "space": space or {"keep": {"low": 0.3, "high": 1.0}}}
    with pytest.raises(DipsimError, match=match) as e:
        load_searches(write_exp(tmp_path, search))
    assert str(tmp_path / "f.yaml") in str(e.value) and "\n" not in str(e.value)


def test_fronts_png_has_one_front_per_method_in_every_panel(tmp_path):
    out = tmp_path / "out"
    said: list[str] = []
    res = run_variants(load_searches(write_exp(tmp_path, SEARCH)), out, progress=False,
                       evaluate=search_fake.evaluate, log=said.append)
    for d in DEVICES:
        for m in METHODS:
            assert (out / d / m / "trials.parquet").exists()
    assert (out / "fronts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("[8/8] phone-12gb-ufs40 / glu-prune" in s for s in said)
    df = pd.read_parquet(out / "fronts.parquet")
    counts = df.groupby(["v.device", "v.masking"]).size()
    assert all(counts[(d, "dense")] == 1 and counts[(d, "dip")] == 5 for d in DEVICES)
    fig = method_fronts(df, "m.tokens_per_s", "m.perplexity", front_key="v.masking", panel_keys=["v.device"],
                        maximize_x=True, minimize_y=True, limit=("m.dense_perplexity", 1.5, "budget"))
    axes = fig.get_axes()
    assert len(axes) == len(DEVICES)
    for ax, d in zip(axes, DEVICES):
        labels = [ln.get_label() for ln in ax.get_lines()]
        have = [m for m in METHODS if df[(df["v.device"] == d) & (df["v.masking"] == m)]["pareto"].any()]
        assert labels == have + ["budget"] and "dense" in have    # one front (a line, or dense's star) per method
        assert ax.get_lines()[-1].get_ydata()[0] == pytest.approx(12.0 * 1.5)    # the fake dense perplexity
        for ln in ax.get_lines()[:-1]:
            sub = df[(df["v.device"] == d) & (df["v.masking"] == ln.get_label()) & df["pareto"]]
            assert sorted(ln.get_xdata()) == sorted(sub["m.tokens_per_s"])
    # winners: the panel's joint front, cut into stretches that together hold every one of its points
    for d in DEVICES:
        sub = df[df["v.device"] == d].reset_index(drop=True)
        joint = nondominated(np.column_stack([-sub["m.tokens_per_s"], sub["m.perplexity"]]),
                             sub["feasible"].to_numpy(bool))
        stretches = [w for w in res["winners"] if w["device"] == d]
        assert sum(w["points"] for w in stretches) == len(joint)
        assert all(a["tokens_per_s_to"] <= b["tokens_per_s_from"] for a, b in zip(stretches, stretches[1:]))
    assert {(r["device"], r["masking"]) for r in res["summary"]} == {(d, m) for d in DEVICES for m in METHODS}


def test_dominates_small_cases():
    a = np.array([[1.0, 1.0], [0.0, 3.0]])
    assert _dominates(a, np.array([[2.0, 2.0], [1.0, 3.0]]))
    assert not _dominates(a, np.array([[2.0, 2.0], [0.5, 0.5]]))    # one point beyond a's front
    assert not _dominates(a, a)                                      # equal fronts do not dominate
    assert not _dominates(a[:0], a)


def test_share_measures_the_first_studys_designs_on_the_other_device(tmp_path):
    out = tmp_path / "out"
    variants = load_searches(write_exp(tmp_path, {**SEARCH, "share": ["device"]}))
    assert variants[0].shares == variants[len(METHODS)].shares == (("masking", "dense"),)
    run_variants(variants, out, progress=False, evaluate=search_fake.evaluate, log=lambda s: None)
    for m in METHODS[1:]:
        a18, phone = (pd.read_parquet(out / d / m / "trials.parquet") for d in DEVICES)
        cols = [c for c in a18.columns if c.startswith("p.keep") or c == "p.gamma"]
        assert len(a18) == len(phone) == 5
        assert a18[cols].to_dict("records") == phone[cols].to_dict("records")


@pytest.mark.parametrize("share", [["masking"], ["nope"], "device", []])
def test_bad_share_names_file_and_key(tmp_path, share):
    with pytest.raises(DipsimError, match=r"f\.yaml: search\.share: expected a list of keys of search\.each other "
                                          r"than its last \(device\)"):
        load_searches(write_exp(tmp_path, {**SEARCH, "share": share}))


def test_shipped_fronts_experiment_has_a_study_per_device_and_method():
    variants = load_searches(Path(__file__).resolve().parents[1] / "experiments" / "fronts.yaml")
    methods = ["dense", "glu-prune", "threshold", "dip", "dip-ca", "cats", "cats-ca", "dejavu", "powerinfer"]
    assert [v.name for v in variants] == [f"{d} / {m}" for d in DEVICES for m in methods]
    assert all(v.search.base["dram_fraction"] == 0.5 and v.search.constraints for v in variants)
