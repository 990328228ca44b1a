"""MMLU with the policy in the loop: wall time and accuracies of the issue-20 set of configurations.

    python benchmarks/mmlu.py [--model qwen2.5-0.5b] [--questions-per-topic 10] [--shots 0]
                              [--reset-cache] [--dtype float32|bfloat16] [--threads N]
                              [--configs dense,dip,...] [--profile Q]

Runs ``simulator.accuracy.evaluate_mmlu`` (no result store, in this process) on the stratified
MMLU draw with six configurations: dense, DIP keep 0.5, DIP-CA gamma 0.5 and gamma 0.2 (keep 0.5),
glu-prune keep 0.5 and threshold keep 0.5, each with an LRU cache holding half the MLP, and prints
the wall time (target, issue 20: <= 15 minutes on the 2-core machine for qwen2.5-0.5b at 10
questions per topic) with its breakdown, and every row's accuracy with its Wilson 95% interval and
the paired difference to dense with its 95% interval and McNemar's p. The load average is printed
before and after, and the process's CPU time beside the wall time: other processes on the machine
slow the run down, and with ``--threads 1`` the CPU time is what the run would take on an idle core.

``--profile Q`` measures instead where a question's time goes, side by side in one process, on the
first Q questions of the 2-per-topic draw: one plain transformers forward per question (the model's
own logits), dipsim's dense path (the questions of a topic batched as rows) and its masked path
(DIP keep 0.5 with its LRU cache), in float32 and, where the CPU has bfloat16 arithmetic, in bfloat16. ``--threads``: torch's intra-op
threads (default: torch's own, one per core); on a machine shared with other jobs one thread is
often faster than two, whose every operation waits for the slower thread.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

CONFIGS = [
    {"masking": "dense"},
    {"masking": "dip", "keep": 0.5},
    {"masking": "dip-ca", "gamma": 0.5, "keep": 0.5},
    {"masking": "dip-ca", "gamma": 0.2, "keep": 0.5},
    {"masking": "glu-prune", "keep": 0.5},
    {"masking": "threshold", "keep": 0.5},
]
for _c in CONFIGS:
    _c.update(cache="lru", dram_fraction=0.5)
NAMES = ("dense", "dip", "dip-ca-0.5", "dip-ca-0.2", "glu-prune", "threshold")


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--questions-per-topic", type=int, default=10)
    ap.add_argument("--shots", type=int, default=0)
    ap.add_argument("--reset-cache", action="store_true")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--configs", default=",".join(NAMES),
                    help=f"comma-separated subset of {', '.join(NAMES)} (dense always runs)")
    ap.add_argument("--profile", type=int, default=0, metavar="Q",
                    help="profile Q questions instead (module doc)")
    a = ap.parse_args(argv)
    import torch

    from common.cpu import describe

    if a.threads:
        torch.set_num_threads(a.threads)
    if a.profile:
        return profile(a)
    unknown = set(a.configs.split(",")) - set(NAMES)
    if unknown:
        ap.error(f"--configs: unknown {', '.join(sorted(unknown))}; choose from {', '.join(NAMES)}")
    configs = [c for n, c in zip(NAMES, CONFIGS) if n == "dense" or n in a.configs.split(",")]

    from common.errors import DipsimError
    from simulator.accuracy import evaluate_mmlu
    from traces.models import load_model

    try:
        print(f"{describe()}\nload average before: {_load()} (torch threads {torch.get_num_threads()})", flush=True)
        t0, c0 = time.perf_counter(), time.process_time()
        lm = load_model(a.model, dtype=a.dtype)
        t_load = time.perf_counter() - t0
        rows = evaluate_mmlu(lm, configs, questions_per_topic=a.questions_per_topic, shots=a.shots,
                             reset_cache=a.reset_cache, reuse=False, progress=True)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    except DipsimError as e:
        sys.exit(f"benchmarks/mmlu.py: {e}")
    r0 = rows[0]
    print(f"\n{a.model} in {a.dtype}: {r0['mmlu_questions']} questions ({a.questions_per_topic} per topic, {a.shots}-shot, cache "
          f"{'reset per question' if a.reset_cache else 'carried across questions'}), {r0['scored_tokens']} masked "
          f"positions per configuration")
    print(f"wall time {wall:.0f} s = {wall / 60:.1f} min (target <= 15 min): model load {t_load:.0f} s, dense "
          f"forward {r0['trace_seconds']:.0f} s, configurations "
          + ", ".join(f"{r['label'].split(' lru')[0]} {r['loop_seconds']:.0f} s (policy {r['select_seconds']:.0f} s)"
                      for r in rows))
    n_fwd = 1 + sum(r["mmlu_accuracy_diff"] is not None for r in rows)
    print(f"CPU time of this process {cpu:.0f} s = {cpu / 60:.1f} min ({cpu / wall:.2f} of the wall time; with one "
          f"thread, about the wall time on an otherwise idle core)")
    print(f"per question and forward: {wall / (n_fwd * r0['mmlu_questions']):.2f} s all in, "
          f"{r0['trace_seconds'] / r0['mmlu_questions']:.2f} s the dense pass; "
          f"{r0['scored_tokens'] / r0['mmlu_questions']:.1f} positions per question")
    print(f"load average after: {_load()}\n")
    print(f"{'configuration':28s} {'accuracy':>8s} {'95% interval':>16s} {'vs dense':>8s} {'95% interval':>18s} "
          f"{'McNemar p':>9s} {'hit rate':>8s}")
    for r in rows:
        diff = r.get("mmlu_accuracy_diff")
        d = "" if diff is None else f"{diff:+.3f}"
        di = "" if diff is None else f"[{r['mmlu_accuracy_diff_low']:+.3f}, {r['mmlu_accuracy_diff_high']:+.3f}]"
        p = "" if diff is None else f"{r['mmlu_mcnemar_p']:.3f}"
        print(f"{r['label']:28s} {r['mmlu_accuracy']:8.3f} [{r['mmlu_accuracy_low']:.3f}, {r['mmlu_accuracy_high']:.3f}] "
              f"{d:>8s} {di:>18s} {p:>9s} {r['mmlu_hit_rate']:8.3f}")
    return 0


def profile(a) -> int:
    """Where a question's time goes (module doc): seconds per question of each path, both dtypes."""
    import tempfile
    from pathlib import Path

    import torch

    from common.cpu import cpu_flags, describe, has_arithmetic
    from simulator.accuracy import evaluate_mmlu
    from traces import questions as q
    from traces.models import load_model

    qs = q.load_questions(None)
    ids = q.stratified(qs, 2, 0)[:a.profile]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "profile.jsonl"
        path.write_text("".join(json.dumps(_row(qs.questions[i])) + "\n" for i in ids), encoding="utf-8")
        print(f"{describe()}\nload average before: {_load()} (torch threads {torch.get_num_threads()}); {len(ids)} "
              f"questions", flush=True)
        dtypes = ["float32"] + (["bfloat16"] if has_arithmetic("bfloat16", cpu_flags()) is not False else [])
        if len(dtypes) == 1:
            print("bfloat16 not profiled: this CPU has no bfloat16 arithmetic (it would run ~40x slower)")
        for dtype in dtypes:
            lm = load_model(a.model, dtype=dtype)
            seqs = [lm.tokenizer(q.prompt(qs, i, []), add_special_tokens=False).input_ids for i in ids]
            t = time.perf_counter()
            with torch.inference_mode():
                for s in seqs:
                    lm.model(input_ids=torch.tensor([s])).logits[0, -1]
            plain = (time.perf_counter() - t) / len(ids)
            t = time.perf_counter()
            dense, dip = evaluate_mmlu(lm, [CONFIGS[0], CONFIGS[1]], questions=path, questions_per_topic=None,
                                       reuse=False)
            whole = (time.perf_counter() - t) / len(ids)
            n = len(ids)
            print(f"{dtype:9s} per question: plain transformers forward {plain:.2f} s ({sum(map(len, seqs)) / n:.0f} "
                  f"positions); dipsim dense (batched) {dense['trace_seconds'] / n:.2f} s = "
                  f"{dense['trace_seconds'] / n / plain:.2f}x plain; DIP keep 0.5 (masked, LRU) "
                  f"{dip['loop_seconds'] / n:.2f} s = {dip['loop_seconds'] / n / plain:.2f}x plain, of which policy "
                  f"and cache {dip['select_seconds'] / n:.2f} s; evaluate_mmlu all in {whole:.2f} s "
                  f"(load {_load()})", flush=True)
            del lm
    return 0


def _row(question) -> dict:
    from traces.questions import LETTERS

    return {"question": question.question, **{f"answer_{c}": v for c, v in zip("abcd", question.choices)},
            "correct_answer": LETTERS[question.answer], "topic": question.topic}


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
