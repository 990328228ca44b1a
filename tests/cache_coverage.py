"""Which rare branches of the cache kernels the hard cases of the differential tests reach.

    NUMBA_DISABLE_JIT=1 python tests/cache_coverage.py [--json]

A rare branch is marked in the kernel source by a comment on its first line,

    w = g_ctr[1]            # rare[s3fifo, s3fifo-lcs]: the ghost ring is full: compaction

naming the policies whose streams must reach it. The kernels are numba-compiled, which no line
tracer sees, so this runs them as plain Python (``NUMBA_DISABLE_JIT=1``; it refuses to run
otherwise) under ``sys.settrace``. For each policy it drives a cache through the hard cases of
``cache_cases`` (the streams ``test_cache_differential`` runs as explicit examples) by every path
of the differential check -- ``run()``, ``run_layer()`` under both step models, ``step()`` -- in
chunks, and stops as soon as every branch marked for that policy has run: each branch is reported
with the case, path and request or step where it was first reached, or as never reached. Driving a
cache in chunks is the same as one call (``caches.base``); Belady's per-request and layer-wise
paths, which take a whole sequence at once, run whole.
"""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np

SOURCES = Path(__file__).resolve().parent.parent / "simulator" / "caches"
TAG = re.compile(r"#\s*rare\[([^\]]+)\]:\s*(.+?)\s*$")
PATHS = ("run", "sequential run_layer", "set run_layer", "set step")
CHUNK = 50           # requests or steps per call


def tags() -> dict[tuple[str, int], tuple[list[str], str]]:
    """``(file, line) -> (policies, description)`` of every tagged line of the kernels."""
    out = {}
    for f in sorted(SOURCES.glob("*.py")):
        for i, line in enumerate(f.read_text().splitlines(), 1):
            m = TAG.search(line)
            if m:
                out[(str(f), i)] = ([p.strip() for p in m.group(1).split(",")], m.group(2))
    return out


class Tracer:
    """Records which of ``wanted`` (``(file, line)``) have run, tracing only the frames whose code
    still holds one not yet seen."""

    def __init__(self, wanted: set[tuple[str, int]]):
        self.wanted = set(wanted)
        self.seen: set[tuple[str, int]] = set()
        self._lines: dict[object, set[tuple[str, int]]] = {}

    def _of(self, code) -> set[tuple[str, int]]:
        got = self._lines.get(code)
        if got is None:
            lines = {ln for _, _, ln in code.co_lines() if ln is not None}
            got = self._lines[code] = {w for w in self.wanted if w[0] == code.co_filename and w[1] in lines}
        return got

    def __call__(self, frame, event, arg):
        if event == "call" and self._of(frame.f_code) - self.seen:
            return self._line
        return None

    def _line(self, frame, event, arg):
        if event == "line":
            key = (frame.f_code.co_filename, frame.f_lineno)
            if key in self.wanted:
                self.seen.add(key)
                if not self._of(frame.f_code) - self.seen:
                    frame.f_trace_lines = False
        return self._line

    def done(self) -> bool:
        return self.wanted <= self.seen


def _chunks(n: int, whole: bool):
    return [(0, n)] if whole else [(a, min(n, a + CHUNK)) for a in range(0, n, CHUNK)]


def drive(name: str, case, path: str):
    """Yield ``(position, unit)`` after each chunk of ``path`` on ``case`` for policy ``name``."""
    from cache_cases import make

    masks = case.masks()
    rows, ids = np.nonzero(masks)
    belady = name == "belady"
    if path == "run":
        c = make(name, case)
        for a, b in _chunks(len(ids), belady):
            c.run(ids[a:b])
            yield b, "request"
        return
    if path == "set step":
        c = make(name, case, future=masks[:, None] if belady else None)
        for a, b in _chunks(len(masks), False):
            for m in masks[a:b]:
                c.step(m[None])
            yield b, "step"
        return
    c = make(name, case, path.split()[0])
    for a, b in _chunks(len(masks), belady):
        c.run_layer(0, masks[a:b])
        yield b, "step"


def measure() -> dict:
    """Per policy, per tagged branch: where the hard cases first reach it (or None). The drives of
    every (case, path) advance in turn, a chunk each, so that a branch that one case reaches early
    is not waited for behind the whole of another (Belady's whole-sequence drives come last)."""
    from cache_cases import HARD_CASES, POLICIES

    marked = tags()
    report = {}
    for name in POLICIES:
        mine = {k for k, (pols, _) in marked.items() if name in pols}
        tracer = Tracer(mine)
        first: dict[tuple[str, int], str] = {}
        drives = [(f"{case_name}, {path}", drive(name, case, path))
                  for case_name, case in HARD_CASES.items() for path in PATHS]
        if name == "belady":        # its whole-sequence drives last: each is a full run
            drives.sort(key=lambda d: not d[0].endswith("set step"))
        sys.settrace(tracer)
        try:
            while drives and not tracer.done():
                for label, it in list(drives):
                    step = next(it, None)
                    if step is None:
                        drives.remove((label, it))
                        continue
                    for k in tracer.seen - first.keys():
                        first[k] = f"{label}, by {step[1]} {step[0]:,}"
                    if tracer.done():
                        break
        finally:
            sys.settrace(None)
        report[name] = [{"where": f"{Path(f).name}:{line}", "branch": marked[(f, line)][1],
                         "reached": first.get((f, line))} for f, line in sorted(mine)]
    return report


def main() -> None:
    if os.environ.get("NUMBA_DISABLE_JIT") != "1":
        sys.exit("cache_coverage: set NUMBA_DISABLE_JIT=1 (the tracer cannot see compiled kernels)")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    report = measure()
    if "--json" in sys.argv:
        print(json.dumps(report))
        return
    for name, rows in report.items():
        for r in rows:
            print(f"{name:11s} {r['where']:17s} {r['branch'][:60]:60s} {r['reached'] or 'NEVER REACHED'}")
    n = sum(len(rows) for rows in report.values())
    hit = sum(r["reached"] is not None for rows in report.values() for r in rows)
    print(f"\n{hit} of {n} (policy, rare branch) pairs reached")


if __name__ == "__main__":
    main()
