"""The MMLU task and the accuracy intervals (issue 20, sections 2 and 3).

* intervals: Wilson, McNemar and the bootstraps on small exact cases and as properties;
* questions files: parsing, the header lines, errors naming the file and line, the stratified draw
  and the worked examples;
* prompts and scoring: dipsim's answers against an independent implementation of lm-eval's MMLU
  prompt and scoring on the real model (slow), and the batched run of the questions against each
  question run alone;
* the options: eval's command line, a sweep point's ``accuracy: {task: mmlu}``.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import DipsimError
from simulator.accuracy import intervals as iv
from traces import questions as q

# A few questions written for these tests (two topics), in the MMLU jsonl format.
OWN = [
    ("elementary_mathematics", "What is 7 multiplied by 8?", ("54", "56", "63", "64"), "B"),
    ("elementary_mathematics", "Which of these numbers is prime?", ("21", "27", "29", "33"), "C"),
    ("elementary_mathematics", "What is half of 150?", ("75", "50", "70", "85"), "A"),
    ("elementary_mathematics", "How many sides does a hexagon have?", ("5", "8", "7", "6"), "D"),
    ("astronomy", "Which planet is closest to the Sun?", ("Venus", "Mercury", "Mars", "Earth"), "B"),
    ("astronomy", "What does the Moon orbit?", ("The Sun", "Mars", "The Earth", "Jupiter"), "C"),
    ("astronomy", "Which is the largest planet of the Solar System?", ("Jupiter", "Saturn", "Neptune", "Earth"), "A"),
]


def write_questions(path, rows=OWN, header: bool = False):
    lines = []
    if header:
        lines.append(json.dumps({f: f for f in q.FIELDS[:5]} | {"correct_answer": "answer", "topic": "topic"}))
    for topic, question, choices, answer in rows:
        lines.append(json.dumps({"question": question, **{f"answer_{c}": v for c, v in zip("abcd", choices)},
                                 "correct_answer": answer, "topic": topic}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------- intervals
def test_wilson_exact_cases():
    lo, hi = iv.wilson(5, 10)
    assert lo == pytest.approx(0.236593, abs=1e-6) and hi == pytest.approx(0.763407, abs=1e-6)
    lo, hi = iv.wilson(10, 10)             # k = n: the lower end is n / (n + z^2), the upper 1
    assert lo == pytest.approx(10 / (10 + 1.959963984540054 ** 2)) and hi == 1.0
    assert iv.wilson(0, 10)[0] == 0.0
    assert iv.wilson(0, 0) == (0.0, 1.0)


@given(st.integers(1, 5000), st.data())
def test_wilson_holds_the_estimate_and_is_symmetric(n, data):
    k = data.draw(st.integers(0, n))
    lo, hi = iv.wilson(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    lo2, hi2 = iv.wilson(n - k, n)
    assert lo == pytest.approx(1 - hi2, abs=1e-12) and hi == pytest.approx(1 - lo2, abs=1e-12)
    if n >= 4:    # more questions, a narrower interval at the same proportion
        lo4, hi4 = iv.wilson(4 * k, 4 * n)
        assert hi4 - lo4 < hi - lo


def test_mcnemar_exact_cases():
    assert iv.mcnemar_exact(0, 0) == 1.0
    assert iv.mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert iv.mcnemar_exact(9, 1) == pytest.approx(2 * (1 + 10) / 1024)
    assert iv.mcnemar_exact(3, 3) == 1.0


@given(st.integers(1, 300), st.integers(1, 64), st.integers(0, 2 ** 16))
@settings(max_examples=60, deadline=None)
def test_block_indices_are_runs_of_consecutive_positions(n, block, seed):
    idx = iv.block_indices(n, block, resamples=5, seed=seed)
    assert idx.shape == (5, n) and idx.min() >= 0 and idx.max() < n
    b = min(block, n)
    for row in idx:
        for s in range(0, n, b):        # each block: consecutive positions, wrapping at the end
            part = row[s:s + b]
            assert np.array_equal(part, (part[0] + np.arange(len(part))) % n)


def test_block_of_the_whole_text_is_a_rotation():
    idx = iv.block_indices(50, 50, resamples=3, seed=1)
    for row in idx:
        assert sorted(row) == list(range(50))


@given(st.lists(st.floats(0, 8), min_size=2, max_size=200), st.integers(1, 40))
@settings(max_examples=40, deadline=None)
def test_text_intervals_bound_the_figures(nll, block):
    nll = np.array(nll)
    rng = np.random.default_rng(0)
    dense = nll + rng.normal(0, 0.1, nll.size)
    kl, top1 = np.abs(rng.normal(0, 0.1, nll.size)), rng.random(nll.size) < 0.7
    out = iv.text_intervals(nll, dense, kl, top1, block=block, resamples=200)
    for name in ("perplexity", "kl_to_dense", "top1_agreement", "perplexity_diff"):
        assert out[f"{name}_low"] <= out[f"{name}_high"]
    # each resample's mean lies between the smallest and largest per-position figure
    assert math.exp(nll.min()) - 1e-9 <= out["perplexity_low"] and out["perplexity_high"] <= math.exp(nll.max()) + 1e-9
    assert 0.0 <= out["top1_agreement_low"] and out["top1_agreement_high"] <= 1.0
    assert out["perplexity_diff"] == pytest.approx(math.exp(nll.mean()) - math.exp(dense.mean()))


def test_text_intervals_of_identical_rows_are_zero_and_pairing_narrows():
    rng = np.random.default_rng(3)
    nll = rng.gamma(2.0, 1.2, 1024)
    same = iv.text_intervals(nll, nll, np.zeros(1024), np.ones(1024, bool))
    assert same["perplexity_diff"] == 0 and same["perplexity_diff_low"] == same["perplexity_diff_high"] == 0
    assert same["kl_to_dense_low"] == same["kl_to_dense_high"] == 0
    assert same["top1_agreement_low"] == same["top1_agreement_high"] == 1
    # a configuration slightly worse everywhere: the paired difference is far narrower than the interval
    worse = iv.text_intervals(nll + 0.02, nll, np.full(1024, 0.02), np.ones(1024, bool))
    assert worse["perplexity_diff_low"] > 0
    width = worse["perplexity_high"] - worse["perplexity_low"]
    assert worse["perplexity_diff_high"] - worse["perplexity_diff_low"] < 0.2 * width


def test_paired_change_exact_cases():
    rng = np.random.default_rng(4)
    kl = rng.gamma(2.0, 0.2, 512)
    assert iv.paired_change(0.7 * kl, kl) == pytest.approx((-0.3, -0.3, -0.3))   # the same factor everywhere
    nll = rng.gamma(2.0, 1.2, 512)
    rel, lo, hi = iv.paired_change(nll + 0.1, nll, exp=True)      # perplexity exp(mean): exactly e^0.1 - 1
    assert rel == pytest.approx(math.expm1(0.1)) and lo == pytest.approx(rel) and hi == pytest.approx(rel)
    noisy, lo, hi = iv.paired_change(kl + rng.normal(0, 0.05, 512), kl)
    assert lo < noisy < hi and lo < 0 < hi


def test_accuracy_figures_exact_and_paired():
    c = np.array([1, 1, 0, 1, 0, 1, 1, 0, 1, 1], bool)
    out = iv.accuracy_figures(c, None)
    assert out["mmlu_accuracy"] == 0.7 and out["mmlu_questions"] == 10
    assert (out["mmlu_accuracy_low"], out["mmlu_accuracy_high"]) == iv.wilson(7, 10)
    assert "mmlu_accuracy_diff" not in out
    same = iv.accuracy_figures(c, c)
    assert same["mmlu_accuracy_diff"] == same["mmlu_accuracy_diff_low"] == same["mmlu_accuracy_diff_high"] == 0
    assert same["mmlu_mcnemar_p"] == 1.0
    d = c.copy()
    d[[0, 1, 3]] = False           # dense answered three more right
    out = iv.accuracy_figures(d, c)
    assert out["mmlu_accuracy_diff"] == pytest.approx(-0.3)
    assert out["mmlu_accuracy_diff_low"] <= -0.3 <= out["mmlu_accuracy_diff_high"] <= 0
    assert out["mmlu_mcnemar_p"] == pytest.approx(0.25)


@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=300))
@settings(max_examples=50, deadline=None)
def test_accuracy_difference_interval_holds_the_difference(pairs):
    c = np.array([a for a, _ in pairs])
    d = np.array([b for _, b in pairs])
    out = iv.accuracy_figures(c, d, resamples=2000)
    diff = out["mmlu_accuracy_diff"]
    assert diff == pytest.approx(c.mean() - d.mean())
    assert out["mmlu_accuracy_diff_low"] <= out["mmlu_accuracy_diff_high"]
    assert -1 <= out["mmlu_accuracy_diff_low"] and out["mmlu_accuracy_diff_high"] <= 1
    assert 0 <= out["mmlu_mcnemar_p"] <= 1


# ---------------------------------------------------------------------------------------- questions
def test_questions_file_parses_and_skips_header_lines(tmp_path):
    qs = q.load_questions(write_questions(tmp_path / "own.jsonl", header=True))
    assert len(qs.questions) == len(OWN) and qs.name == "file:own.jsonl" and qs.digest.startswith("sha256:")
    assert list(qs.topics) == ["astronomy", "elementary_mathematics"]
    assert [qs.questions[i].answer for i in range(3)] == [1, 2, 0]


@pytest.mark.parametrize("change, message", [
    ({"correct_answer": "E"}, "field 'correct_answer' must be one of A, B, C, D"),
    ({"topic": ""}, "field 'topic' must be a non-empty text"),
    ({"answer_c": 3}, "field 'answer_c' must be a non-empty text"),
])
def test_bad_questions_name_file_line_and_field(tmp_path, change, message):
    p = write_questions(tmp_path / "bad.jsonl")
    lines = p.read_text().splitlines()
    row = json.loads(lines[2]) | change
    lines[2] = json.dumps(row)
    p.write_text("\n".join(lines))
    with pytest.raises(DipsimError, match=f"bad.jsonl:3: {message}"):
        q.load_questions(p)


def test_missing_questions_and_missing_set_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(DipsimError, match="questions file not found"):
        q.load_questions(tmp_path / "nope.jsonl")
    monkeypatch.setattr(q, "package_dir", lambda module: None)
    with pytest.raises(DipsimError, match=r"not installed; install it with: python3 tasks\.py data mmlu"):
        q.installed_file("mmlu")


@given(st.integers(0, 5), st.integers(0, 1000))
def test_stratified_draw_takes_n_per_topic_independently(per_topic, seed):
    qs = q.QuestionSet("t", "x", tuple(q.Question(f"q{i}", ("a", "b", "c", "d"), i % 4, f"t{i % 3}")
                                       for i in range(30)))
    ids = q.stratified(qs, per_topic, seed)
    assert len(ids) == 3 * per_topic and len(set(ids)) == len(ids)
    for topic, members in qs.topics.items():
        mine = [i for i in ids if qs.questions[i].topic == topic]
        assert len(mine) == per_topic and set(mine) <= set(members)
    # a topic's draw does not depend on the other topics
    fewer = q.QuestionSet("t", "x", tuple(x for x in qs.questions if x.topic != "t2"))
    kept = [qs.questions[i] for i in ids if qs.questions[i].topic != "t2"]
    assert [fewer.questions[i] for i in q.stratified(fewer, per_topic, seed)] == kept
    assert q.stratified(qs, None) == sorted(range(30), key=lambda i: (qs.questions[i].topic, i))


def test_shots_come_from_the_same_topic_never_the_question(tmp_path):
    qs = q.load_questions(write_questions(tmp_path / "own.jsonl"))
    for i in range(len(qs.questions)):
        s = q.shots(qs, i, 2, seed=1)
        assert i not in s and len(set(s)) == 2
        assert {qs.questions[j].topic for j in s} == {qs.questions[i].topic}
        assert s == q.shots(qs, i, 2, seed=1)
    with pytest.raises(DipsimError, match="--shots 3: topic 'astronomy'.*only 2 other"):
        q.shots(qs, 4, 3)


def reference_prompt(topic: str, rows: list[tuple[str, tuple, str]]) -> str:
    """lm-eval's MMLU prompt written out independently: description, worked examples, the question."""
    out = f"The following are multiple choice questions (with answers) about {topic.replace('_', ' ')}.\n\n"
    for n, (question, choices, answer) in enumerate(rows):
        out += question.strip()
        for letter, choice in zip("ABCD", choices):
            out += "\n" + letter + ". " + choice
        out += "\nAnswer:"
        if n < len(rows) - 1:
            out += " " + answer + "\n\n"
    return out


def test_prompt_is_lm_evals_template(tmp_path):
    qs = q.load_questions(write_questions(tmp_path / "own.jsonl"))
    i = 5                                            # "What does the Moon orbit?" (astronomy)
    shots = q.shots(qs, i, 2, seed=0)
    rows = [(qs.questions[j].question, qs.questions[j].choices, "ABCD"[qs.questions[j].answer]) for j in shots]
    rows.append((qs.questions[i].question, qs.questions[i].choices, "?"))
    assert q.prompt(qs, i, shots) == reference_prompt("astronomy", rows)
    assert q.prompt(qs, 0, []) == ("The following are multiple choice questions (with answers) about elementary "
                                   "mathematics.\n\nWhat is 7 multiplied by 8?\nA. 54\nB. 56\nC. 63\nD. 64\nAnswer:")


def test_installed_mmlu_set_when_present():
    try:
        qs = q.load_questions(None)
    except DipsimError as e:
        pytest.skip(str(e))
    assert len(qs.questions) == 14042 and len(qs.topics) == 57
    assert sum(len(v) for v in qs.topics.values()) == 14042


# ---------------------------------------------------------------------------------------- options
def test_sweep_point_accuracy_mapping():
    from simulator.config import MmluTask, PointConfig

    base = {"trace": {"model": "smollm2-135m", "tokens": 64}, "masking": "dip", "keep": 0.5}
    p = PointConfig.from_flat({**base, "accuracy": {"task": "mmlu", "questions_per_topic": 2, "shots": 1}}, "exp")
    assert p.accuracy == MmluTask(questions_per_topic=2, shots=1)
    assert p.accuracy.kwargs()["questions_per_topic"] == 2
    assert PointConfig.from_flat({**base, "accuracy": {"task": "text"}}, "exp").accuracy is True
    with pytest.raises(DipsimError, match="accuracy.task: unknown task"):
        PointConfig.from_flat({**base, "accuracy": {"task": "hellaswag"}}, "exp")
    with pytest.raises(DipsimError, match="accuracy: unknown key .questions_per_topik."):
        PointConfig.from_flat({**base, "accuracy": {"task": "mmlu", "questions_per_topik": 2}}, "exp")


def test_mmlu_options_need_the_mmlu_task(capsys):
    from simulator import cli

    assert cli.main(["eval", "--questions-per-topic", "3", "--masking", "dense"]) != 0
    assert "--questions-per-topic belongs to the mmlu task" in capsys.readouterr().err
    assert cli.main(["eval", "--task", "mmlu", "--tokens", "64", "--masking", "dense"]) != 0
    assert "--tokens belongs to the text task" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- real model
def reference_answers(lm, path) -> tuple[str, np.ndarray]:
    """Every question of ``path`` answered by an independent implementation: the prompt written out
    (``reference_prompt``), encoded by the tokenizer without special tokens after the model's own
    prefix, one plain forward per question, the log-softmax over the vocabulary at the last position
    read at the tokens of " A" ... " D"."""
    import torch

    from traces import prefix

    own = prefix.resolve("auto", lm)
    letters = [lm.tokenizer(" " + x, add_special_tokens=False).input_ids[0] for x in "ABCD"]
    out, lps = "", []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        text = reference_prompt(row["topic"], [(row["question"], tuple(row[f"answer_{c}"] for c in "abcd"), "?")])
        ids = ([] if own is None else [own]) + lm.tokenizer(text, add_special_tokens=False).input_ids
        with torch.inference_mode():
            logits = lm.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
        lp = torch.log_softmax(logits, -1)[letters].double().numpy()
        lps.append(lp)
        out += "ABCD"[int(np.argmax(lp))]
    return out, np.array(lps)


def dipsim_answers(rows: list[dict]) -> str:
    return rows[0]["mmlu_answers"]


@pytest.mark.slow
def test_dense_answers_equal_an_independent_implementation(smollm2, tmp_path):
    from simulator.accuracy import evaluate_mmlu

    path = write_questions(tmp_path / "own.jsonl")
    ref, ref_lp = reference_answers(smollm2, path)
    r = evaluate_mmlu(smollm2, {"masking": "dense"}, questions=path, questions_per_topic=None, reuse=False,
                      details=True)[0]
    assert r["mmlu_answers"] == ref            # in the file's order
    order = np.argsort(r["details"]["ids"])
    np.testing.assert_allclose(r["details"]["logprobs"][order], ref_lp, atol=2e-3)
    truth = "".join(a for *_, a in OWN)
    assert r["mmlu_accuracy"] == pytest.approx(np.mean([a == b for a, b in zip(ref, truth)]))
    assert r["mmlu_questions"] == len(OWN) and r["mmlu_accuracy_diff"] is None


@pytest.mark.slow
def test_bfloat16_dense_answers_equal_an_independent_implementation(tmp_path):
    """--dtype bfloat16 runs the same prompt and scoring: dipsim's batched dense answers equal the
    independent implementation's one forward per question in bfloat16. bfloat16 keeps 8 bits of
    mantissa, so the batched and the one-question forwards round differently, and by how much depends on
    the kernels and threads: the letters' log-probabilities agree within 0.75 (measured up to 0.19 with
    one thread, 0.47 in a clean-clone CI run with two; a wrong prompt or letter token moves them by
    whole units) and only a near-tie (margin < 1.5, twice that) may change an answer."""
    from simulator.accuracy import evaluate_mmlu
    from traces.models import load_model

    lm = load_model("smollm2-135m", dtype="bfloat16")
    path = write_questions(tmp_path / "own.jsonl")
    ref, ref_lp = reference_answers(lm, path)
    r = evaluate_mmlu(lm, {"masking": "dense"}, questions=path, questions_per_topic=None, reuse=False,
                      details=True)[0]
    assert r["dtype"] == "bfloat16"
    order = np.argsort(r["details"]["ids"])
    np.testing.assert_allclose(r["details"]["logprobs"][order], ref_lp, atol=0.75)
    close = np.sort(ref_lp, axis=1)[:, -1] - np.sort(ref_lp, axis=1)[:, -2] < 1.5   # near-ties may flip
    assert all(a == b or c for a, b, c in zip(r["mmlu_answers"], ref, close))


@pytest.mark.slow
def test_batched_questions_equal_each_question_alone(smollm2, tmp_path):
    """With a fresh cache per question, a cache-aware policy's answers on the whole file (questions
    batched as rows, masked row by row) equal those of every question run alone; with the cache
    carried across questions, the hit rate over the stream differs."""
    from simulator.accuracy import evaluate_mmlu

    ca = {"masking": "dip-ca", "gamma": 0.2, "keep": 0.5, "cache": "lru", "dram_fraction": 0.5}
    path = write_questions(tmp_path / "own.jsonl")
    whole = evaluate_mmlu(smollm2, ca, questions=path, questions_per_topic=None, reset_cache=True, reuse=False,
                          details=True)[0]
    order = np.argsort(whole["details"]["ids"])
    lp_whole = whole["details"]["logprobs"][order]
    for n, row in enumerate(OWN[:4]):
        one = write_questions(tmp_path / f"q{n}.jsonl", [row])
        alone = evaluate_mmlu(smollm2, ca, questions=one, questions_per_topic=None, reuse=False, details=True)[0]
        np.testing.assert_allclose(alone["details"]["logprobs"][0], lp_whole[n], atol=1e-4)
    carried = evaluate_mmlu(smollm2, ca, questions=path, questions_per_topic=None, reset_cache=False, reuse=False)[0]
    assert carried["mmlu_hit_rate"] != whole["mmlu_hit_rate"]
    assert 0 <= carried["mmlu_accuracy_low"] <= carried["mmlu_accuracy"] <= carried["mmlu_accuracy_high"] <= 1


@pytest.mark.slow
@pytest.mark.parametrize("masking", [{"masking": "dense"},
                                     {"masking": "dip-ca", "gamma": 0.2, "keep": 0.5, "cache": "lru",
                                      "dram_fraction": 0.5}])
def test_any_batching_gives_the_unbatched_answers(smollm2, tmp_path, monkeypatch, masking):
    """The batch size is a speed knob only: one question per forward, every question in one padded
    forward and the default batching give the same answers, letter log-probabilities and, with the
    cache carried across the questions, the same closed-loop hit rate over the stream."""
    from simulator.accuracy import evaluate_mmlu, mmlu_loop

    path = write_questions(tmp_path / "own.jsonl")
    runs = {}
    for batch_tokens in (1, mmlu_loop.BATCH_TOKENS, 1 << 20):
        monkeypatch.setattr(mmlu_loop, "BATCH_TOKENS", batch_tokens)
        r = evaluate_mmlu(smollm2, masking, questions=path, questions_per_topic=None, reuse=False, details=True)[0]
        runs[batch_tokens] = r
    one, default, whole = runs.values()
    assert len(one["details"]["ids"]) == len(OWN)
    for other in (default, whole):
        assert other["details"]["ids"] == one["details"]["ids"]       # the same run order
        assert other["mmlu_answers"] == one["mmlu_answers"]
        np.testing.assert_allclose(other["details"]["logprobs"], one["details"]["logprobs"], atol=1e-4)
        assert other["mmlu_hit_rate"] == pytest.approx(one["mmlu_hit_rate"], abs=1e-3)


@pytest.mark.slow
def test_neuron_policy_runs_in_the_mmlu_loop(smollm2, tmp_path):
    """CATS scores neurons by the gate activation: the MMLU loop's hooks see it and its calibration
    trace records it (this was refused as "the trace does not hold g"); the masked log-probabilities
    move away from the dense ones."""
    from simulator.accuracy import evaluate_mmlu

    path = write_questions(tmp_path / "own.jsonl")
    cats = {"masking": "cats", "keep": 0.5, "cache": "lru", "dram_fraction": 0.5}
    dense, row = evaluate_mmlu(smollm2, [{"masking": "dense"}, cats], questions=path, questions_per_topic=None,
                               reuse=False, details=True)
    assert row["mmlu_accuracy_diff"] is not None and 0 < row["mmlu_hit_rate"] < 1
    assert np.abs(row["details"]["logprobs"] - dense["details"]["logprobs"]).max() > 1e-3


@pytest.mark.slow
def test_mmlu_runs_of_a_named_model_load_it_once_per_process(smollm2, tmp_path, monkeypatch):
    """A search's MMLU trials each call ``evaluate_mmlu`` with the model's name: the process keeps the
    loaded model (``accuracy.session``) as its text trials do, instead of loading it every trial; another
    dtype is another model. The kept model gives the answers a fresh load gives."""
    import traces.models
    from simulator.accuracy import evaluate_mmlu, session

    real, loads = traces.models.load_model, []
    monkeypatch.setattr(traces.models, "load_model", lambda spec, **kw: loads.append(kw.get("dtype")) or real(spec, **kw))
    path = write_questions(tmp_path / "own.jsonl")
    session.release()
    try:
        runs = [evaluate_mmlu("smollm2-135m", {"masking": m, "keep": 0.5, "cache": "lru", "dram_fraction": 0.5},
                              questions=path, questions_per_topic=None, reuse=False)[0]
                for m in ("dip", "dip-ca", "dip")]
        assert loads == ["float32"] and session.kept()["model"] is not None
        assert runs[0]["mmlu_answers"] == runs[2]["mmlu_answers"] and runs[0]["mmlu_hit_rate"] == runs[2]["mmlu_hit_rate"]
        alone = evaluate_mmlu(smollm2, {"masking": "dip", "keep": 0.5, "cache": "lru", "dram_fraction": 0.5},
                              questions=path, questions_per_topic=None, reuse=False)[0]
        assert alone["mmlu_answers"] == runs[0]["mmlu_answers"]
    finally:
        session.release()


@pytest.mark.slow
def test_configurations_added_to_a_stored_dense_run_skip_its_forward(smollm2, tmp_path, monkeypatch):
    """Configurations that prune, asked beside a dense row the store already holds or after any run
    that made the dense pass (same questions and run options), take the dense answers from the store
    instead of running the dense forward again -- their figures equal a run from scratch; a new
    configuration that prunes nothing, or another run option, still runs it."""
    from simulator.accuracy import evaluate_mmlu, mmlu, store

    monkeypatch.setattr(store, "results_dir", lambda: tmp_path / "store")
    path = write_questions(tmp_path / "own.jsonl")
    dense = {"masking": "dense", "cache": "lru", "dram_fraction": 0.5}
    dip = {"masking": "dip", "keep": 0.5, "cache": "lru", "dram_fraction": 0.5}
    scratch = evaluate_mmlu(smollm2, [dense, dip], questions=path, questions_per_topic=None, reuse=False)
    evaluate_mmlu(smollm2, dense, questions=path, questions_per_topic=None)          # into the store
    real, dense_passes = mmlu.forward_batches, []
    monkeypatch.setattr(mmlu, "forward_batches", lambda *a, **k: dense_passes.append(1) or real(*a, **k))
    again = evaluate_mmlu(smollm2, [dense, dip], questions=path, questions_per_topic=None)
    assert dense_passes == [] and again[0]["from_cache"] and not again[1]["from_cache"]
    assert again[1]["trace_seconds"] == again[0]["trace_seconds"] > 0     # the stored dense pass's time
    for k in ("mmlu_answers", "mmlu_accuracy", "mmlu_accuracy_diff", "mmlu_accuracy_diff_low",
              "mmlu_accuracy_diff_high", "mmlu_mcnemar_p", "mmlu_hit_rate", "mmlu_dense_accuracy"):
        assert again[1][k] == scratch[1][k], k
    evaluate_mmlu(smollm2, [dense, {**dense, "dram_fraction": 0.25}], questions=path, questions_per_topic=None)
    assert dense_passes == [1]
    # a search's trial asks one configuration alone: the dense pass of any earlier run stands in
    alone = evaluate_mmlu(smollm2, {**dip, "dram_fraction": 0.25}, questions=path, questions_per_topic=None)[0]
    assert dense_passes == [1] and alone["mmlu_dense_accuracy"] == scratch[0]["mmlu_accuracy"]
    other = evaluate_mmlu(smollm2, dip, questions=path, questions_per_topic=None, shots=1)[0]    # another run
    assert dense_passes == [1, 1] and other["mmlu_questions"] == len(OWN)


@pytest.mark.slow
def test_eval_task_mmlu_command(smollm2, tmp_path, capsys):
    from simulator import cli

    path = write_questions(tmp_path / "own.jsonl")
    assert cli.main(["eval", "--task", "mmlu", "--questions", str(path), "--questions-per-topic", "2",
                     "--masking", "dense", "--masking", "dip", "--keep", "0.5", "--no-reuse", "-q",
                     "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["mmlu_questions"] for r in rows] == [4, 4]
    assert rows[0]["mmlu_accuracy_diff"] is None and rows[1]["mmlu_accuracy_diff"] is not None
    assert rows[1]["mmlu_accuracy_diff_low"] <= rows[1]["mmlu_accuracy_diff"] <= rows[1]["mmlu_accuracy_diff_high"]
    assert cli.main(["eval", "--task", "mmlu", "--questions", str(path), "--masking", "dense", "-q"]) == 0
    out = capsys.readouterr().out
    assert "MMLU, 7 questions of file:own.jsonl" in out and "95% interval" in out
