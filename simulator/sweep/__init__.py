"""YAML sweep experiments: points from axes, run on a local process pool or Dask, resumable results.

``experiment`` reads and expands an experiment file, checking every point before any work;
``execute`` runs one point (replay, engine, accuracy columns) and its dense baseline (``dense``: the
dense model on the same device and DRAM, once per process and per sweep); ``run`` runs a sweep on
an executor; ``results`` keeps the results folder (``results.parquet``, one row per point: its ``key`` --
readable axis values plus a short hash of the whole resolved point -- every parameter as
``p.<name>`` and every metric as ``m.<name>``).
"""
from .execute import captured_trace_path, dense_baseline, run_point, run_points, trace_for
from .experiment import Experiment, Point, flatten, load_experiment, point_hash
from .points import load_point, make_point
from .results import load_results
from .run import EXECUTORS, run_sweep

__all__ = ["EXECUTORS", "Experiment", "Point", "captured_trace_path", "dense_baseline", "flatten", "load_experiment", "load_point", "load_results", "make_point",
           "point_hash", "run_point", "run_points", "run_sweep", "trace_for"]
