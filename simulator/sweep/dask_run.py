"""A sweep's points on Dask: a remote scheduler (``--scheduler ADDRESS``) or a local cluster.

The client connects (or the local cluster starts) before the sweep writes anything, so a wrong
address fails in one line and leaves no output. A local cluster's workers keep their scratch files
in a temporary folder that goes with the cluster (not a ``dask-scratch-space`` left in the working or
the temporary folder).
"""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from common.errors import DipsimError

from .. import plugins
from .execute import run_plugin_points


@contextmanager
def dask_session(jobs: int, scheduler: str | None) -> Iterator[Callable]:
    """``execute(tasks)`` on a Dask client, connected on entry and closed on exit."""
    with dask_client(jobs, scheduler) as client:
        yield lambda tasks: _run(client, tasks)


@contextmanager
def dask_client(jobs: int, scheduler: str | None) -> Iterator[Any]:
    """A Dask client of the scheduler at ``scheduler`` or of a local cluster of ``jobs`` workers,
    connected on entry and closed on exit (also by ``dipsim optimize``, which submits trial by trial)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise DipsimError("the dask executor needs dask[distributed]: pip install 'dask[distributed]'") from None
    import logging

    logging.getLogger("distributed").setLevel(logging.ERROR)   # its shutdown chatter is not the user's business
    # Ctrl-C inside the client's wait once made distributed's own cancel callback fail on the event loop
    # (NameError: free variable 'future', distributed.utils.sync) and tornado logged its traceback before
    # dipsim's "interrupted" line; errors of tasks reach the sweep through their results, not this log
    loop_log = logging.getLogger("tornado.application")
    loop_level = loop_log.level
    loop_log.setLevel(logging.CRITICAL)
    scratch = tempfile.mkdtemp(prefix="dipsim-dask-")
    cluster = client = None
    try:
        try:
            if scheduler:
                client = Client(scheduler, timeout="10s")
            else:
                import dask

                with dask.config.set({"temporary-directory": scratch}), _quiet_tracker():   # its scratch too
                    cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                           dashboard_address=None, local_directory=scratch, preload=[__name__])
                client = Client(cluster)
        except Exception as e:     # noqa: BLE001 -- distributed raises OSError, TimeoutError, ValueError, ...
            what = f"--scheduler {scheduler}: cannot reach the Dask scheduler" if scheduler else \
                "cannot start a local Dask cluster"
            raise DipsimError(f"{what} ({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
        yield client
    except BaseException:
        _close(client, cluster, seconds=0.5)    # an error or an interrupt: stop now, not after the stragglers
        raise
    else:
        _close(client, cluster, seconds=5.0)
        loop_log.setLevel(loop_level)       # after an interrupt it stays quiet: late callbacks still come
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def _quiet_tracker() -> Iterator[None]:
    """Start the local cluster with multiprocessing's resource tracker told not to warn: after an
    interrupt the sweep exits at once, and the tracker, which outlives it, removed the cluster's
    semaphores but also printed 'There appear to be 14 leaked semaphore objects' after the sweep's
    last line. The tracker inherits the environment when it starts, which is here."""
    import os

    before = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [before, "ignore:resource_tracker:UserWarning"]))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONWARNINGS", None)
        else:
            os.environ["PYTHONWARNINGS"] = before


def dask_setup(worker) -> None:
    """Distributed's preload hook, run in each local worker process as it starts: Ctrl-C is the
    sweep's to handle (it stops the workers), as in the local pool's workers; a terminal sends it
    to the whole process group, and a worker would otherwise print its own traceback. Its own logging
    is off: after an interrupt a worker printed a cancelled task's warning and, losing its scheduler,
    a heartbeat's traceback after the sweep's last line; a task's error reaches the sweep through
    its result."""
    import logging
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("distributed").setLevel(logging.CRITICAL)


def _run(client, tasks) -> None:
    """Every task (a list of ``run.Job``) on the cluster; each job's ``done`` gets its row as it comes."""
    from distributed import as_completed

    specs = plugins.loaded()      # every worker loads the parent's plugins before it resolves a name
    futs = {client.submit(run_plugin_points, specs, [j.config for j in task], [j.dense for j in task], pure=False):
            task for task in tasks}
    try:
        for f in as_completed(list(futs)):
            for j, row in zip(futs[f], f.result()):
                j.done(row)
    except BaseException:
        client.cancel(list(futs), force=True)
        raise


def _close(client, cluster, seconds: float) -> None:
    """Close the client and the local cluster, waiting at most about ``seconds`` for each; a local
    cluster's worker processes that are still there then are killed (they run dipsim's code, which
    holds nothing worth a graceful exit once the sweep has stopped)."""
    procs = []
    if cluster is not None:
        for nanny in getattr(cluster, "workers", {}).values():
            proc = getattr(getattr(nanny, "process", None), "process", None)
            procs += [proc] if proc is not None else []
    for thing in (client, cluster):
        if thing is not None:
            try:
                thing.close(timeout=seconds)
            except Exception:   # noqa: BLE001 -- a dead scheduler, a timeout: nothing more to close
                pass
    for proc in procs:
        try:
            if proc.is_alive():
                proc.kill()
        except (OSError, ValueError, AttributeError):
            pass
