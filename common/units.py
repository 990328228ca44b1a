"""Quantities with units: parsing what people write ("50 us", "4 KiB", "5.7 GB/s", "2e9") into base
units, with one-line errors naming the file and field, and formatting base units for people.

    sizes     B, kB/KB, MB, GB, TB (powers of 10); KiB, MiB, GiB, TiB (powers of 2)
    rates     a size per second: MB/s, GB/s, GiB/s, ...; bits: Mb/s, Gb/s, Gbit/s
    times     s, ms, us (or µs), ns
    energy    J/B, mJ/B, uJ/B, nJ/B, pJ/B, and per bit: nJ/bit, pJ/bit
    compute   FLOP/s, GFLOP/s, TFLOP/s, FLOPS, TFLOPS, OP/s, TOPS
    counts    whole numbers; ``unbounded`` where allowed
"""
from __future__ import annotations

import math
import re
from typing import Any

from .errors import DipsimError

INF = math.inf
_SIZE = {"B": 1, "byte": 1, "bytes": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
         "KiB": 2 ** 10, "MiB": 2 ** 20, "GiB": 2 ** 30, "TiB": 2 ** 40}
_BITS = {"b": 1 / 8, "bit": 1 / 8, "kb": 1e3 / 8, "Kb": 1e3 / 8, "kbit": 1e3 / 8, "Mb": 1e6 / 8, "Mbit": 1e6 / 8,
         "Gb": 1e9 / 8, "Gbit": 1e9 / 8, "Tb": 1e12 / 8, "Tbit": 1e12 / 8}
_TIME = {"s": 1, "sec": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9, "ps": 1e-12}
_RATE = {**{f"{u}/s": f for u, f in {**_SIZE, **_BITS}.items() if u not in ("byte", "bytes", "bit")},
         **{f"{u}ps": f for u, f in {**_SIZE, **_BITS}.items() if u not in ("byte", "bytes", "bit", "b", "B")}}
_EJ = {"J": 1, "mJ": 1e-3, "uJ": 1e-6, "µJ": 1e-6, "nJ": 1e-9, "pJ": 1e-12, "fJ": 1e-15}
_ENERGY = {**{f"{e}/B": f for e, f in _EJ.items()}, **{f"{e}/byte": f for e, f in _EJ.items()},
           **{f"{e}/bit": f * 8 for e, f in _EJ.items()}, **{f"{e}/b": f * 8 for e, f in _EJ.items()}}
_PFX = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_FLOPS = {}
for _p, _f in _PFX.items():
    for _w in ("FLOP/s", "FLOPS", "OP/s", "OPS"):
        _FLOPS[f"{_p}{_w}"] = _f
_FLOPS.pop("OPS", None)  # a bare "OPS" reads too much like a typo; "OP/s" is fine

UNITS = {"size": _SIZE, "rate": _RATE, "time": _TIME, "energy": _ENERGY, "flops": _FLOPS, "ops": _FLOPS}
DESCRIBE = {"size": "a size", "rate": "a rate (bytes per second)", "time": "a time", "energy": "an energy per byte",
            "flops": "a compute rate", "ops": "an operation rate", "count": "a whole number", "number": "a number",
            "fraction": "a fraction"}
EXAMPLES = {"size": "B, KB, MB, GB, KiB, MiB, GiB", "rate": "MB/s, GB/s, MiB/s, GiB/s, Gb/s",
            "time": "s, ms, us, ns", "energy": "pJ/B, nJ/B, pJ/bit", "flops": "GFLOP/s, TFLOP/s, TFLOPS, TOPS",
            "ops": "TOPS, GOP/s, TOP/s"}
BASE = {"size": "bytes", "rate": "bytes/s", "time": "seconds", "energy": "J/byte", "flops": "FLOP/s", "ops": "OP/s"}
_NUM = re.compile(r"^\s*([-+]?(?:\d+(?:[_,]\d{3})*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$")
_UNBOUNDED = {"unbounded", "inf", "infinite", "infinity", "unlimited"}


def field_error(where: str, fld: str | None, msg: str) -> DipsimError:
    """A one-line error about field ``fld`` of ``where`` (a file or option)."""
    text = f"{where}: field '{fld}': {msg}" if fld else f"{where}: {msg}"
    return DipsimError(" ".join(text.split()))        # always one line


def parse_quantity(value: Any, kind: str, *, where: str = "<value>", fld: str = "value", zero_ok: bool = False,
                   inf_ok: bool = False, integer: bool = False) -> float:
    """A quantity in base units from a number or a unit string; DipsimError naming ``where``/``fld``.

    ``kind``: size, rate, time, energy, flops, count (whole number), number, fraction (0 < f <= 1).
    """
    got = repr(value)
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise field_error(where, fld, f"expected {DESCRIBE[kind]}{_hint(kind)}, got {got}")
    if isinstance(value, (int, float)):
        v = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.lower() in _UNBOUNDED:
            v = INF
        else:
            m = _NUM.match(text)
            if not m:
                raise field_error(where, fld, f"expected {DESCRIBE[kind]}{_hint(kind)}, got {got}")
            v = float(m.group(1).replace("_", "").replace(",", ""))
            unit = m.group(2)
            if unit:
                table = UNITS.get(kind)
                if table is not None and unit in table:
                    f = table[unit]
                    v = v * f if f >= 1 else v / round(1 / f)     # 50 us -> 50 / 1e6, exactly 5e-05
                else:
                    other = next((k for k, t in UNITS.items() if unit in t), None)
                    what = f" ({DESCRIBE[other]})" if other else " (unknown unit)"
                    if table is None:
                        raise field_error(where, fld, f"expected {DESCRIBE[kind]} without a unit, got {got}{what}")
                    raise field_error(where, fld, f"expected {DESCRIBE[kind]}, got {got}{what}; allowed units: "
                                           f"{', '.join(table)}; or a plain number in {BASE[kind]}")
    else:
        raise field_error(where, fld, f"expected {DESCRIBE[kind]}{_hint(kind)}, got {got}")
    if math.isnan(v):
        raise field_error(where, fld, f"expected {DESCRIBE[kind]}, got {got}")
    if math.isinf(v):
        if v > 0 and inf_ok:
            return INF
        raise field_error(where, fld, f"must be finite, got {got}" + ("" if inf_ok else " ('unbounded' is not allowed here)"))
    if kind == "fraction":
        if not (0 < v <= 1):
            raise field_error(where, fld, f"must be a fraction in (0, 1], got {got}")
        return v
    if v < 0 or (v == 0 and not zero_ok):
        raise field_error(where, fld, f"must be {'>= 0' if zero_ok else '> 0'}, got {got}")
    if (integer or kind == "count") and v != int(v):
        raise field_error(where, fld, f"must be a whole number, got {got}")
    return v


def _hint(kind: str) -> str:
    if kind in EXAMPLES:
        return f" (units: {EXAMPLES[kind]}; or a plain number in {BASE[kind]})"
    return ""


# --------------------------------------------------------------------------- formatting
def fmt_size(b: float) -> str:
    """A size in the unit it was most likely written in: exact decimal multiples in GB/MB/kB
    (8e9 -> "8 GB", not "7812500 KiB"), exact binary ones in GiB/MiB/KiB, else 4 digits."""
    if math.isinf(b):
        return "unbounded"
    for unit, f in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10),
                    ("kB", 1e3)):
        if b >= f and b % f == 0:
            return f"{int(b // f)} {unit}"
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= f:
            return f"{b / f:.4g} {unit}"
    return f"{b:g} B"


def fmt_rate(r: float) -> str:
    if math.isinf(r):
        return "unbounded"
    return f"{r / 1e9:.4g} GB/s" if r >= 1e9 else f"{r / 1e6:.4g} MB/s"


def fmt_time(t: float) -> str:
    if t == 0:
        return "0 s"
    if t < 1e-6:
        return f"{t * 1e9:.4g} ns"
    if t < 1e-3:
        return f"{t * 1e6:.4g} us"
    return f"{t * 1e3:.4g} ms" if t < 1 else f"{t:.4g} s"


def fmt_count(v: float) -> str:
    return "unbounded" if math.isinf(v) else f"{int(v)}"


def fmt_quantity(v: float, kind: str) -> str:
    """``v`` (base units) for a person, by kind."""
    if math.isinf(v):
        return "unbounded"
    return {"size": fmt_size, "rate": fmt_rate, "time": fmt_time, "count": fmt_count}.get(kind, lambda x: f"{x:g}")(v)
