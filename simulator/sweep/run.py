"""Running a sweep: every unfinished point, on a local process pool or Dask, results kept current.

Points are grouped by their replay (points that differ only in device, engine or layout share
one), groups cut so that every worker gets work. Traces are captured and accuracy measured once,
here, before the workers start. The dense baselines the points need (``sweep.dense``) run first,
each once -- a dense point that is its own baseline counts as one -- and are kept in
``OUT/dense/``; every other point then receives its baseline's figures. Every worker loads the
plugins the parent loaded (``plugins.loaded``) before it resolves a name. Nothing is written before
the executor is ready (a Dask scheduler reached), the traces captured and the accuracy measured; a
run that ends, by an error or an interrupt, before its first point finishes removes the folder it
started. Workers die with their parent: on Linux each asks the kernel for SIGKILL when the parent
dies (``PR_SET_PDEATHSIG``), so a ``kill -9`` of the sweep leaves no orphan holding memory and the
terminal.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from common.errors import DipsimError
from common.progress import progress_bar
from common.params import max_workers

from .. import plugins
from ..config import PointConfig
from ..replay import needs_gate_activations
from .dense import BaselineStore, dense_figures, dense_point, is_own_baseline
from .execute import (captured_trace_path, dense_key, precompute_accuracy, replay_key, run_plugin_points, run_point,
                      trace_for, trace_path)
from .experiment import Experiment, Point
from .results import discard_output, read_output, row_of, save_point, start_output, write_parquet

EXECUTORS = ("local", "dask")


@dataclass
class Job:
    """One run of ``run_point`` in a sweep: its configuration, its dense baseline's figures when known,
    and what the parent does with the row (save a point, keep a baseline, or both)."""

    config: PointConfig
    done: Callable[[dict[str, Any]], None]
    dense: dict[str, Any] | None = None


def run_sweep(exp: Experiment, out: str | os.PathLike, *, jobs: int = 1, executor: str = "local",
              scheduler: str | None = None, progress: bool = True,
              log: Callable[[str], None] | None = None, report: bool = True, command: str | None = None) -> Path:
    """Run every unfinished point of ``exp`` and keep ``out/results.parquet`` current; at the end write
    ``out/provenance.json`` and, with ``report``, ``out/report.html`` (``command``: what ran it)."""
    from ..config import TraceSpec

    out = Path(out)
    say = log or (lambda s: print(s, file=sys.stderr))
    if not progress and log is None:      # a quiet command line: errors and the result only
        say = _silent
    if executor not in EXECUTORS:
        raise DipsimError(f"unknown executor {executor!r}; allowed: {', '.join(EXECUTORS)}")
    check_jobs(jobs, executor, scheduler)
    done, changed = read_output(exp, out)
    stale = [k for k, r in done.items() if "m.tokens_per_s" in r and "m.speedup_vs_dense" not in r]
    for k in stale:
        del done[k]
    todo = [p for p in exp.points if p.key not in done]
    rows = [done[p.key] for p in exp.points if p.key in done]
    with _executor(executor, min(jobs, max(len(todo), 1)), scheduler) as execute:
        for spec in {p.config.trace for p in todo if isinstance(p.config.trace, TraceSpec)}:
            gate = any(p.config.trace == spec and needs_gate_activations(p.config.replay) for p in todo)
            if not captured_trace_path(spec).exists():     # captured once, here, not by every worker
                verb = "generating" if spec.synthetic else "capturing"
                say(f"{verb} {spec.tokens} tokens of {spec.model} (once; cached in {captured_trace_path(spec)})")
                trace_for(spec, progress=progress)
            elif gate and spec.synthetic is None and not trace_for(spec).has_g:
                say(f"capturing {spec.tokens} tokens of {spec.model} again: the cached capture predates gate "
                    f"activations, which cats needs ({captured_trace_path(spec)})")
                trace_for(spec, progress=progress, recapture=True)
        if any(p.config.accuracy for p in todo):
            precompute_accuracy(todo, say, progress)
        made = not out.exists()
        fresh = made or not any(out.iterdir())
        say(f"sweep {exp.name}: {len(exp.points)} points ({len(exp.dropped)} dropped) -> {out}")
        for k, reason in exp.dropped:
            say(f"dropped {k}: {reason}")
        if stale:
            say(f"{len(stale)} finished points predate the dense baseline (speedup_vs_dense): they run again")
        if done:
            say(f"resuming: {len(done)} of {len(exp.points)} points already finished"
                + (" (the experiment changed since; unchanged points are reused)" if changed else ""))
        _run(exp, out, execute, (todo, rows, len(done)), jobs, progress, say, (made, fresh))
    by_key: dict[str, list] = {}
    for r in rows:
        by_key.setdefault(r["key"], []).append(r)
    write_parquet(out, [r for p in exp.points for r in by_key.get(p.key, ())])   # in the experiment's order
    _provenance_and_report(exp, out, report, command, say)
    return out / "results.parquet"


def _silent(message: str) -> None:
    pass


def _run(exp: Experiment, out: Path, execute, work: tuple[list[Point], list, int], jobs: int, progress: bool,
         say, fresh: tuple[bool, bool]) -> None:
    """The dense baselines, then the points, each saved as it finishes. A folder this run made, or
    found empty, is emptied (and removed) again if the run ends before any point finished.
    ``work``: (the points to run, the finished rows, how many were finished before); ``fresh``: (the
    run makes the folder, the folder was empty or absent)."""
    todo, rows, n_done = work
    bar = progress_bar(len(exp.points), progress, f"sweep {exp.name}", unit="pt", initial=n_done, leave=True)
    finished = []

    def finish(point: Point, metrics: dict[str, Any]) -> None:
        row = row_of(point, metrics)
        save_point(out, point, row)         # finished: its file is what a rerun resumes from
        rows.append(row)
        finished.append(point)
        write_parquet(out, rows)
        bar.update(1)

    store = BaselineStore(out)

    def keep(key: str, cfg: PointConfig, row: dict[str, Any]) -> None:
        known[key] = dense_figures(row, prefix="m.")
        store.write(key, cfg, trace_path(cfg.trace), known[key])

    try:
        start_output(exp, out)
        if rows:
            write_parquet(out, rows)
        known = store.read()
        first, later = _dense_first(todo, known, finish, keep)
        if first:
            say(f"dense baselines: {len(first)} to run first, each once (kept in {store.dir})")
            execute(_tasks(first, jobs))
        for j in later:
            j.dense = known.get(dense_key(j.config)) if j.config.device is not None else None
        if later:
            execute(_tasks(later, jobs))
    except BaseException as e:
        if fresh[1] and not finished:
            discard_output(out, made=fresh[0])
        if isinstance(e, KeyboardInterrupt):      # say what was kept (the CLI prints it; SIGTERM stays 143)
            n = n_done + len(finished)
            bar.close()
            raise KeyboardInterrupt(f"interrupted: {n} of {len(exp.points)} points finished" +
                                    (f", kept in {out} (rerun the sweep to resume)" if n else "; nothing kept")) from e
        raise
    finally:
        bar.close()


def _provenance_and_report(exp: Experiment, out: Path, report: bool, command: str | None, say) -> None:
    """``provenance.json`` and ``report.html``; a report that cannot be written costs the report (one
    warning line), never the results."""
    from . import provenance
    from .results import load_results

    prov = provenance.write(out, exp, command)
    if not report:
        return
    from ..report import table_source, write_report

    try:
        write_report(load_results(out), out / "report.html", provenance=prov,
                     source=table_source(out / "results.parquet"), title=exp.name)
    except DipsimError as e:
        say(f"dipsim: warning: no report: {e}")


def _dense_first(todo: list[Point], known: dict[str, dict[str, Any]], finish, keep) -> tuple[list[Job], list[Job]]:
    """The jobs to run first -- each dense baseline the points need and ``known`` lacks, once: a dense
    point that is its own baseline, else the baseline's own configuration -- and then the rest."""
    first: dict[str, Job] = {}
    later: list[Job] = []
    for p in todo:
        key = dense_key(p.config) if p.config.device is not None else None
        if key is not None and key not in known and key not in first and is_own_baseline(p.config):
            first[key] = Job(p.config, lambda row, p=p, key=key: (keep(key, p.config, row), finish(p, row)))
        else:
            later.append(Job(p.config, lambda row, p=p: finish(p, row)))
    for j in later:
        key = dense_key(j.config) if j.config.device is not None else None
        if key is not None and key not in known and key not in first:
            base = dense_point(j.config)
            first[key] = Job(base, lambda row, base=base, key=key: keep(key, base, row))
    return list(first.values()), later


def check_jobs(jobs: int, executor: str, scheduler: str | None) -> None:
    """Refuse a number of workers this machine cannot run (not for a remote Dask scheduler, whose
    workers run elsewhere), and a scheduler address without the Dask executor."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise DipsimError(f"--jobs must be a whole number >= 1, got {jobs!r}")
    if scheduler is not None and executor != "dask":
        raise DipsimError(f"--scheduler {scheduler} applies to --executor dask only (this run: --executor {executor})")
    if scheduler is None and jobs > max_workers():
        raise DipsimError(f"--jobs {jobs}: more worker processes than this machine runs usefully (at most "
                          f"{max_workers()}, 4 per CPU; a sweep of many points still uses every worker)")


@contextmanager
def _executor(kind: str, jobs: int, scheduler: str | None) -> Iterator[Callable]:
    """``execute(tasks)`` for the executor asked for, each job's ``done`` called with its row; a Dask
    client is connected (or its local cluster started) once, on entry, before the sweep writes
    anything, and closed on exit."""
    if kind == "dask":
        from .dask_run import dask_session

        with dask_session(jobs, scheduler) as execute:
            yield execute
    elif jobs == 1:
        def execute(tasks: list[list[Job]]) -> None:
            for task in tasks:
                for j in task:
                    j.done(run_point(j.config, threads=None, dense=j.dense))
        yield execute
    else:
        yield lambda tasks: _run_pool(tasks, jobs)


def _run_pool(tasks: list[list[Job]], jobs: int) -> None:
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(min(jobs, len(tasks)), initializer=worker_setup)   # an idle worker only costs memory
    try:
        specs = plugins.loaded()
        futs = {pool.submit(run_plugin_points, specs, [j.config for j in task], [j.dense for j in task]): task
                for task in tasks}
        for f in as_completed(futs):
            for j, row in zip(futs[f], f.result()):
                j.done(row)
    except BaseException:
        # interrupted or failed: drop the queued tasks and stop the workers now (finished points
        # are already on disk), rather than waiting for the rest of the sweep
        procs = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            proc.terminate()
        raise
    pool.shutdown()


def worker_setup() -> None:
    """In a worker: die with the parent (Linux), die on SIGTERM (the parent turns it into a clean
    stop) and leave Ctrl-C to the parent, which stops the workers."""
    import signal

    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() == 1:       # the parent died before the request took effect
            os._exit(1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _tasks(todo: list[Job], jobs: int) -> list[list[Job]]:
    """Jobs grouped by replay key (one replay per task), groups cut so that there are at least
    two tasks per worker when the sweep allows it."""
    groups: dict[str, list[Job]] = {}
    for j in todo:
        groups.setdefault(replay_key(j.config), []).append(j)
    want = 2 * jobs if jobs > 1 else 1
    size = max(1, -(-len(todo) // want))
    tasks = []
    for g in groups.values():
        tasks.extend(g[i:i + size] for i in range(0, len(g), size))
    return tasks
