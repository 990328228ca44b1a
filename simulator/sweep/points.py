"""Single points outside a sweep's expansion: a search trial's point (the base with the trial's values)
and the one point of a one-point experiment file (optimize's best.yaml) that replay and eval run."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from common.errors import DipsimError

from .experiment import Point, _check_point, _readable, _resolve_trace_path, foreign, load_experiment, point_hash


def make_point(path: str | os.PathLike, params: dict[str, Any], shown: list[str], *,
               check_traces: bool = True) -> Point:
    """One point from its resolved parameters, named by the keys ``shown``, checked as a sweep's
    points are (foreign policy parameters dropped); the caller decides on its ``config.drop_reason()``."""
    p = Path(path)
    params = json.loads(json.dumps(params))
    _resolve_trace_path(p, params)
    for k in foreign(params):
        del params[k]
    readable = _readable(params, shown, [None])
    return Point(f"{readable}#{point_hash(params)}", params, _check_point(p, readable, params, check_traces))


def load_point(path: str | os.PathLike, option: str = "--config") -> Point:
    """The one point of a one-point experiment file (``dipsim optimize``'s best.yaml, a sweep with no
    axes), for the verbs that run a single configuration."""
    exp = load_experiment(path)
    if len(exp.points) != 1:
        raise DipsimError(f"{option} {path}: holds {len(exp.points)} points; give a one-point experiment (no grid "
                          f"or zip, as optimize's best.yaml) or run it with dipsim sweep")
    return exp.points[0]
