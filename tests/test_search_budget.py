"""``dipsim optimize EXP --out DIR --max-perplexity-increase X`` (one option per search constraint): best.yaml,
trials.parquet's feasibility and the printed front chosen again from the study's finished trials under
that budget, nothing run; bad values and folders without the study refused in one line naming the option."""
from __future__ import annotations

import pandas as pd
import pytest
import yaml

import search_fake
from simulator.cli import main
from simulator.search import load_search, run_search, write_outputs
from simulator.search.space import CONSTRAINTS
from test_search import SPACE, write_exp


@pytest.fixture
def study(tmp_path):
    exp = write_exp(tmp_path, {"space": SPACE, "constraints": {"max_perplexity_increase": 0.5, "fits_in_dram": True},
                               "trials": 12})
    out = tmp_path / "out"
    s = load_search(exp)
    write_outputs(s, run_search(s, out, progress=False, evaluate=search_fake.evaluate), out)   # the file's budget
    return exp, out


def errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("dipsim: error:")]


def test_every_constraint_has_its_option():
    from simulator.cli import build_parser

    text = build_parser().parse_args(["optimize", "x.yaml"])
    assert all(hasattr(text, k) for k in CONSTRAINTS)


@pytest.mark.parametrize("budget", [0.02, 0.1, 0.3])
def test_budget_chooses_from_finished_trials_and_runs_none(study, capsys, budget):
    exp, out = study
    journal = (out / "study.journal").read_bytes()
    before = pd.read_parquet(out / "trials.parquet")
    capsys.readouterr()
    assert main(["optimize", str(exp), "--out", str(out), "--max-perplexity-increase", str(budget), "-q"]) == 0
    printed = capsys.readouterr().out
    assert (out / "study.journal").read_bytes() == journal          # no trial run, nothing queued
    df = pd.read_parquet(out / "trials.parquet")
    assert list(df["trial"]) == list(before["trial"])
    feasible = df["m.perplexity"] <= df["m.dense_perplexity"] * (1 + budget) + 1e-12
    assert (df["feasible"] == feasible).all()
    assert df["c.max_perplexity_increase"].to_numpy() == pytest.approx(
        (df["m.perplexity"] / df["m.dense_perplexity"] - 1 - budget).to_numpy())
    assert "c.fits_in_dram" in df.columns                           # the file's other constraint stays
    if not feasible.any():
        assert not (out / "best.yaml").exists() and "no feasible trial" in printed
        return
    best = yaml.safe_load((out / "best.yaml").read_text())
    trial = int(best["description"].split()[1])
    assert trial == int(df.loc[df[feasible]["m.tokens_per_s"].idxmax(), "trial"])
    assert f"max_perplexity_increase {budget}" in best["description"]
    assert f"{int(feasible.sum())} feasible" in printed


def test_fits_in_dram_false_drops_that_constraint(study, capsys):
    exp, out = study
    assert main(["optimize", str(exp), "--out", str(out), "--fits-in-dram", "false", "-q"]) == 0
    df = pd.read_parquet(out / "trials.parquet")
    assert "c.fits_in_dram" not in df.columns and "c.max_perplexity_increase" in df.columns


@pytest.mark.parametrize("args, words", [
    (["--max-perplexity-increase", "abc"], ["--max-perplexity-increase", "a number >= 0", "'abc'"]),
    (["--max-perplexity-increase", "-0.1"], ["--max-perplexity-increase", "a number >= 0"]),
    (["--max-kl-to-dense", "0"], ["--max-kl-to-dense", "a number > 0"]),
    (["--fits-in-dram", "maybe"], ["--fits-in-dram", "true or false"]),
    (["--max-perplexity-increase", "0.1", "--trials", "5"], ["--max-perplexity-increase", "runs none", "--trials"]),
])
def test_bad_budgets_refused_in_one_line(study, capsys, args, words):
    exp, out = study
    journal = (out / "study.journal").read_bytes()
    capsys.readouterr()
    assert main(["optimize", str(exp), "--out", str(out), *args, "-q"]) != 0
    err = errors(capsys)
    assert len(err) == 1 and all(w in err[0] for w in words), err
    assert (out / "study.journal").read_bytes() == journal


def test_budget_without_a_study_or_with_another_search_refused(tmp_path, capsys):
    exp = write_exp(tmp_path, {"space": SPACE, "constraints": {"max_perplexity_increase": 0.5}, "trials": 3})
    assert main(["optimize", str(exp), "--out", str(tmp_path / "none"), "--max-perplexity-increase", "0.1"]) != 0
    err = errors(capsys)
    assert len(err) == 1 and "no study 'default' to choose from" in err[0] and not (tmp_path / "none").exists()
    run_search(load_search(exp), tmp_path / "out", progress=False, evaluate=search_fake.evaluate)
    other = write_exp(tmp_path, {"space": {**SPACE, "keep": {"low": 0.3, "high": 1.0}}, "trials": 3}, name="t")
    assert main(["optimize", str(other), "--out", str(tmp_path / "out"), "--max-perplexity-increase", "0.1"]) != 0
    err = errors(capsys)
    assert len(err) == 1 and "was run with another search" in err[0]


def test_kl_budget_needs_the_closed_loop(tmp_path, capsys):
    exp = write_exp(tmp_path, {"space": {"masking": ["dip"], "keep": {"low": 0.2, "high": 0.9}}, "trials": 2},
                    base={"cache": "lru", "device": "paper-a18"})
    run_search(load_search(exp), tmp_path / "out", progress=False, evaluate=search_fake.evaluate)
    assert main(["optimize", str(exp), "--out", str(tmp_path / "out"), "--max-kl-to-dense", "0.1"]) != 0
    err = errors(capsys)
    assert len(err) == 1 and "--max-kl-to-dense" in err[0] and "accuracy: true" in err[0]


def test_a_split_search_refuses_a_budget_given_afterwards(tmp_path, capsys):
    exp = write_exp(tmp_path, {"space": SPACE, "each": {"device": ["paper-a18", "phone-12gb-ufs40"]}, "trials": 2})
    assert main(["optimize", str(exp), "--out", str(tmp_path / "out"), "--max-perplexity-increase", "0.1"]) != 0
    err = errors(capsys)
    assert len(err) == 1 and "--max-perplexity-increase" in err[0] and "search.each" in err[0]
    assert not (tmp_path / "out").exists()
