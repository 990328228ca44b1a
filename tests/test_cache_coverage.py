"""The rare branches of the cache kernels (marked ``# rare[policies]: ...`` in their source) are
reached by the hard cases the differential tests run: ``tests/cache_coverage.py`` traces the
kernels as plain Python (``NUMBA_DISABLE_JIT=1``) in a subprocess and reports where each branch is
first reached."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cache_cases import POLICIES
from cache_coverage import TAG, Tracer, tags

HERE = Path(__file__).resolve().parent


def test_every_rare_branch_is_reached_by_the_hard_cases():
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    out = subprocess.run([sys.executable, str(HERE / "cache_coverage.py"), "--json"], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    rows = [(name, r) for name, rs in report.items() for r in rs]
    print(f"\n{len(rows)} (policy, rare branch) pairs:")
    for name, r in rows:
        print(f"  {name:11s} {r['where']:17s} {r['branch'][:55]:55s} {r['reached'] or 'NEVER REACHED'}")
    missed = [f"{name}: {r['where']} ({r['branch']})" for name, r in rows if r["reached"] is None]
    assert not missed, "rare branches no hard case reaches: " + "; ".join(missed)
    assert sorted(report) == sorted(POLICIES)


def test_every_policy_marks_its_rare_branches():
    """Every policy but the trivial has rare branches marked, every mark names known policies,
    and the branches the differential tests are meant to reach are among them."""
    marked = tags()
    named = {p for pols, _ in marked.values() for p in pols}
    assert named == set(POLICIES)
    text = " | ".join(d for _, d in marked.values())
    for what in ("ghost ring is full", "moves to M", "S full before the first eviction", "B1: p grows",
                 "B2: p shrinks", "ties in frequency", "set > capacity", "step's own columns are left",
                 "every cached column is in use"):
        assert what in text, what


def test_the_tracer_reports_a_branch_never_taken():
    """The check can fail: a marked line that never runs stays unseen, one that runs is seen."""
    def f(x):
        if x > 0:
            return 1      # taken
        return -1         # not taken

    code = f.__code__
    taken, never = code.co_firstlineno + 2, code.co_firstlineno + 3
    tracer = Tracer({(code.co_filename, taken), (code.co_filename, never)})
    sys.settrace(tracer)
    try:
        f(1)
    finally:
        sys.settrace(None)
    assert tracer.seen == {(code.co_filename, taken)} and not tracer.done()
    assert TAG.search("x = 1   # rare[lru, arc]: why").groups() == ("lru, arc", "why")
