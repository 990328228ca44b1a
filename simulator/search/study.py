"""Running a search: an Optuna study kept in the output folder, its trials real sweep points.

``OUT/study.journal`` is Optuna's journal storage (one appended line per operation); ``OUT/search.json``
records each study's space digest. One runner at a time holds ``OUT/.lock`` (an ``fcntl`` lock the
kernel drops when the process dies), so a journal lock file left by a killed run is stale and is
removed, as is a last line it left half-written. Trials found running when a study opens were in
flight when their run died: they are marked failed and their values queued again, so a resumed run
loses at most those and counts every finished trial once. A rerun whose space, base, objectives or
constraints changed is refused unless it names a new study (``study=``), which then lives in the same
journal with its outputs in ``OUT/<study>/``.

Each trial draws its values (``Search.values_of``), becomes a sweep point (``Search.point``) and runs
through ``sweep.run_point`` -- replay, the device engine against its dense baseline, the closed loop
from the accuracy store -- inline, on a local process pool or on Dask, as sweeps do. Dense baselines
are kept in ``OUT/dense/`` (``sweep.dense.BaselineStore``) and handed to later trials.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import sys
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Any, Callable

from common.errors import DipsimError
from common.progress import progress_bar
from common.io import atomic_write
from common.jsonio import json_default

from ..sweep.dense import BaselineStore
from ..sweep.execute import dense_key, run_point, trace_for, trace_path
from ..sweep.run import EXECUTORS, check_jobs
from .space import Dim, Search, violations

JOURNAL = "study.journal"
META = "search.json"
DEFAULT_STUDY = "default"


def study_folder(out: Path, name: str) -> Path:
    """Where a study's outputs go: the folder itself for the default study, ``OUT/<name>`` otherwise."""
    return out if name == DEFAULT_STUDY else out / name


def lock(out: Path):
    """Hold ``OUT/.lock`` (one runner per folder; the kernel drops it when the process dies)."""
    out.mkdir(parents=True, exist_ok=True)
    f = open(out / ".lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise DipsimError(f"{out}: another dipsim optimize is running on this folder") from None
    return f


def repair_journal(path: Path) -> None:
    """Drop a half-written last line (a run killed mid-write) and a stale journal lock file."""
    for stale in (path.with_name(path.name + ".lock"),):
        if stale.is_symlink() or stale.exists():
            stale.unlink()
    if path.exists() and path.stat().st_size:
        data = path.read_bytes()
        if not data.endswith(b"\n"):
            with open(path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)


def _check_meta(out: Path, search: Search, name: str) -> dict[str, Any]:
    meta_path = out / META
    meta: dict[str, Any] = {"studies": {}}
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            raise DipsimError(f"{meta_path}: damaged; choose another --out") from None
    elif any(p.name != ".lock" for p in out.iterdir()):
        raise DipsimError(f"{out}: exists and is not a dipsim optimize folder (no {META}); choose another --out")
    known = meta.setdefault("studies", {}).get(name)
    if known and known.get("digest") != search.digest:
        raise DipsimError(f"{out}: study {name!r} was run with another search (base, space, objectives or "
                          f"constraints changed); give --study NEW_NAME to start a new study here, or another --out")
    meta["studies"][name] = {"digest": search.digest, "experiment": str(search.path),
                             "space": {d.name: d.describe() for d in search.dims},
                             "objectives": {o.metric: o.direction for o in search.objectives},
                             "constraints": search.constraints}
    atomic_write(meta_path, json.dumps(meta, indent=1, default=str).encode())
    return meta


def open_study(search: Search, out: Path, name: str = DEFAULT_STUDY, seed_offset: bool = True):
    """The study (created or reopened), trials left running by a dead run failed and queued again."""
    import optuna
    from optuna.trial import TrialState

    _check_meta(out, search, name)
    storage = journal_storage(out)
    probe = optuna.load_study(study_name=name, storage=storage) if name in _names(storage) else None
    n_before = len(probe.trials) if probe else 0
    study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True,
                                directions=[o.direction for o in search.objectives],
                                sampler=make_sampler(search, n_before if seed_offset else 0))
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        if t.state == TrialState.RUNNING:
            study.tell(t.number, state=TrialState.FAIL)
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
    return study


def journal_storage(out: Path):
    """Optuna's journal storage of the folder (held under its lock), repaired first (``repair_journal``)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal = out / JOURNAL
    repair_journal(journal)
    return JournalStorage(JournalFileBackend(str(journal), lock_obj=JournalFileOpenLock(str(journal) + ".lock")))


def _names(storage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]


def make_sampler(search: Search, offset: int = 0):
    """The study's sampler, seeded (a resumed run offsets the seed by the trials so far, so that it
    does not draw its first run's random start again)."""
    import warnings

    import optuna

    seed = search.seed + offset
    if search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, search.trials // 4)))
    with warnings.catch_warnings():     # group: conditional spaces (gamma only for dip-ca) sampled jointly
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                          n_startup_trials=max(2, min(10, search.trials // 4)))


def suggest(trial, d: Dim) -> Any:
    """One value of dimension ``d`` drawn by the trial (its name the point key)."""
    if d.choices is not None:
        plain = [c if isinstance(c, (str, int, float, bool)) or c is None else json.dumps(c) for c in d.choices]
        v = trial.suggest_categorical(d.name, plain)
        return d.choices[plain.index(v)]
    if d.integer:
        return trial.suggest_int(d.name, int(d.low), int(d.high), step=int(d.step or 1), log=d.log)
    return trial.suggest_float(d.name, d.low, d.high, step=d.step, log=d.log)


def counted(study) -> int:
    """Trials that count against the budget: finished ones and points dropped as meaningless."""
    from optuna.trial import TrialState

    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and "dropped" in t.user_attrs))


# ----------------------------------------------------------------------------------------- running
def evaluate_point(cfg, dense: dict[str, Any] | None) -> dict[str, Any]:
    """A trial's metrics: the sweep's ``run_point`` (a module-level function, so workers can run it)."""
    return run_point(cfg, threads=1, dense=dense)


class _Inline:
    def __init__(self, evaluate):
        self.evaluate = evaluate

    def submit(self, cfg, dense) -> Future:
        f: Future = Future()
        try:
            f.set_result(self.evaluate(cfg, dense))
        except BaseException as e:       # noqa: BLE001 - handed to the caller like a worker's error
            f.set_exception(e)
        return f

    def close(self) -> None:
        pass


class _Pool:
    def __init__(self, evaluate, jobs: int):
        from concurrent.futures import ProcessPoolExecutor

        from ..sweep.run import worker_setup

        self.evaluate, self.pool = evaluate, ProcessPoolExecutor(jobs, initializer=worker_setup)

    def submit(self, cfg, dense) -> Future:
        return self.pool.submit(self.evaluate, cfg, dense)

    def close(self) -> None:
        procs = list(getattr(self.pool, "_processes", {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            proc.terminate()


class _Dask:
    def __init__(self, evaluate, jobs: int, scheduler: str | None):
        from ..sweep.dask_run import dask_client

        self.evaluate, self.session = evaluate, dask_client(jobs, scheduler)
        self.client = self.session.__enter__()

    def submit(self, cfg, dense) -> Future:
        f: Future = Future()
        df = self.client.submit(self.evaluate, cfg, dense, pure=False)
        df.add_done_callback(lambda d: f.set_exception(d.exception()) if d.status == "error" else f.set_result(d.result()))
        return f

    def close(self) -> None:
        self.session.__exit__(None, None, None)


def _executor(executor: str, jobs: int, scheduler: str | None, evaluate):
    if executor == "dask":
        return _Dask(evaluate, jobs, scheduler)
    return _Inline(evaluate) if jobs == 1 else _Pool(evaluate, jobs)


def run_search(search: Search, out: str | os.PathLike, *, study_name: str = DEFAULT_STUDY, trials: int | None = None,
               jobs: int = 1, executor: str = "local", scheduler: str | None = None, progress: bool = True,
               log: Callable[[str], None] | None = None,
               evaluate: Callable[[Any, dict | None], dict[str, Any]] = evaluate_point,
               designs: list[dict[str, Any]] | None = None):
    """Run the study until ``trials`` (default the file's) trials have finished; return the study.
    ``evaluate(config, dense)``: a trial's metrics (default the sweep's ``run_point``). ``designs``:
    trial values a new study runs first (enqueued once, when it has no trial yet)."""
    from ..config import TraceSpec

    out = Path(out)
    say = log or (lambda s: print(s, file=sys.stderr))
    if executor not in EXECUTORS:
        raise DipsimError(f"unknown executor {executor!r}; allowed: {', '.join(EXECUTORS)}")
    check_jobs(jobs, executor, scheduler)
    budget = trials or search.trials
    held = lock(out)
    try:
        study = open_study(search, out, study_name)
        if designs and not study.get_trials(deepcopy=False):
            for values in designs:
                study.enqueue_trial(values, user_attrs={"design_of": "shared"})
        done = counted(study)
        if done:
            say(f"resuming study {study_name!r}: {done} of {budget} trials already finished")
        spec = search.point({}).config.trace
        if isinstance(spec, TraceSpec) and evaluate is evaluate_point and not trace_path(spec).exists():
            say(f"capturing {spec.tokens} tokens of {spec.model} (once; cached in {trace_path(spec)})")
            trace_for(spec, progress=progress)
        _loop(search, out, study, budget, _executor(executor, jobs, scheduler, evaluate), jobs, progress)
        return study
    finally:
        held.close()


def _loop(search: Search, out: Path, study, budget: int, ex, jobs: int, progress: bool) -> None:
    from optuna.trial import TrialState

    store = BaselineStore(out)
    known = store.read()
    inflight: dict[Future, tuple[Any, Any]] = {}
    bar = progress_bar(budget, progress, "optimize", unit="trial", initial=min(counted(study), budget), leave=True)
    _show_best(bar, search, study)
    try:
        while True:
            while len(inflight) < jobs and counted(study) + len(inflight) < budget:
                trial = study.ask()
                point = search.point(search.values_of(lambda d: suggest(trial, d)))
                reason = point.config.drop_reason()
                if reason:
                    trial.set_user_attr("dropped", reason)
                    study.tell(trial, state=TrialState.FAIL)
                    bar.update(1)
                    continue
                dk = dense_key(point.config) if point.config.device else None
                inflight[ex.submit(point.config, known.get(dk))] = (trial, point)
            if not inflight:
                break
            finished, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            for f in finished:
                trial, point = inflight.pop(f)
                row = f.result()     # an error in a trial stops the run (finished trials are kept)
                _tell(search, study, trial, point, row)
                if point.config.device and "m.dense_tokens_per_s" in row:
                    dk = dense_key(point.config)
                    if dk not in known:
                        known[dk] = {k: row[f"m.{k}"] for k in ("dense_tokens_per_s", "dense_dram_footprint_bytes",
                                                                 "dense_mlp_in_dram")}
                        store.write(dk, point.config, trace_path(point.config.trace), known[dk])
                bar.update(1)
                _show_best(bar, search, study)
    finally:
        for trial, _ in inflight.values():     # interrupted: in-flight trials run again next time
            study.tell(trial, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        ex.close()
        bar.close()


def _tell(search: Search, study, trial, point, row: dict[str, Any]) -> None:
    from optuna.trial import TrialState

    row = json.loads(json.dumps(row, default=json_default))
    trial.set_user_attr("key", point.key)
    trial.set_user_attr("point", json.loads(json.dumps(point.params, default=str)))
    trial.set_user_attr("metrics", row)
    values = [row.get(f"m.{o.metric}") for o in search.objectives]
    if any(v is None or not math.isfinite(float(v)) for v in values):
        trial.set_user_attr("dropped", f"an objective is not a finite number: {values}")
        study.tell(trial, state=TrialState.FAIL)
        return
    if search.constraints:      # the samplers read them (feasible: every value <= 0); the table too
        cons = violations(search.constraints, row)
        trial.set_user_attr("constraints", cons)
        for name, c in zip(search.constraints, cons):
            trial.set_constraint(name, c)
    study.tell(trial, [float(v) for v in values])


def _show_best(bar, search: Search, study) -> None:
    o = search.objectives[0]
    best = None
    for t in study.get_trials(deepcopy=False):
        if t.values is None or any(c > 0 for c in t.user_attrs.get("constraints", ())):
            continue
        v = t.values[0]
        if best is None or (v < best if o.direction == "minimize" else v > best):
            best = v
    bar.set_postfix_str(f"best feasible {o.metric} {best:.4g}" if best is not None else "no feasible trial yet")
