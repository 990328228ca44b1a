"""JSON of the values dipsim computes: numpy scalars and arrays become plain numbers and lists."""
from __future__ import annotations

from typing import Any

import numpy as np


def jsonable(v: Any) -> Any:
    """``v`` with every numpy value (nested in lists, tuples and dicts too) turned into plain Python."""
    if isinstance(v, np.ndarray):
        return [jsonable(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return v.item()
    return v


def json_default(v: Any) -> Any:
    """``json.dumps(..., default=json_default)``: numpy values as plain ones, anything else as text."""
    if isinstance(v, (np.generic, np.ndarray)):
        return jsonable(v)
    return str(v)
