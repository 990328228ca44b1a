"""Run parameters declared once: a dataclass field carries its default, its check and its help, and
every reader (YAML experiments, command-line options, Python keyword arguments) goes through them.

    @dataclass(frozen=True)
    class EngineConfig:
        mode: str = param("batch", choice("batch", "fine"), "flash time per request batch or per request")

    EngineConfig.from_mapping({"mode": "fine"}, where="exp.yaml: engine")

A check takes ``(value, where)`` and returns the normalized value or raises a one-line
:class:`DipsimError` that names ``where`` (file and key path) and the allowed values. Checks accept
what people write: numbers as YAML reads them (``2e9`` is a string to PyYAML), sizes with units
(``1GB``), ``true``/``false`` from the command line; they refuse booleans where numbers belong,
NaN and infinities, dates, binary data and nested structures where a scalar belongs.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any, Callable, Sequence

import numpy as np

from .errors import DipsimError
from .units import fmt_size, parse_quantity

Check = Callable[[Any, str], Any]
_NUMBER = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")


def param(default: Any, check: Check, help: str, *, metavar: str | None = None, cli: bool = True,
          choices: Callable[[], Sequence[str]] | None = None) -> Any:
    """A dataclass field declaring a run parameter (its default, check and help text)."""
    return dataclasses.field(default=default, metadata={"check": check, "help": help, "metavar": metavar,
                                                        "cli": cli, "choices": choices})


def accepts(check: Check) -> str:
    """What a check accepts, in words (``a number in [0, 1]``): the reference pages show it."""
    return getattr(check, "accepts", "") or "any value"


def says(text: str) -> Callable[[Check], Check]:
    """Mark a check with what it accepts, in words (read back by :func:`accepts`)."""
    def mark(check: Check) -> Check:
        check.accepts = text
        return check
    return mark


def params_of(cls) -> list[dataclasses.Field]:
    """The declared parameters of a config dataclass, in order."""
    return list(_params_of(cls))


@functools.lru_cache(maxsize=None)
def _params_of(cls) -> tuple[dataclasses.Field, ...]:
    return tuple(f for f in dataclasses.fields(cls) if "check" in f.metadata)


_KEY_PATH = re.compile(r"[A-Za-z_][\w.]*(\[\d+\])*")


def child(where: str, name: str) -> str:
    """The location of key ``name`` inside ``where``: ``exp.yaml: base`` -> ``exp.yaml: base.keep``
    (``where`` ends with a key path); ``config 2`` or ``exp.yaml: point gamma=0`` -> ``...: keep``."""
    last = where.rsplit(": ", 1)[1] if ": " in where else ""
    return f"{where}.{name}" if _KEY_PATH.fullmatch(last) else f"{where}: {name}"


def _fail(where: str, msg: str) -> DipsimError:
    return DipsimError(" ".join(f"{where}: {msg}".split()))


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def per_layer_ints(value: Any, L: int, what: str, whole: str = "integers") -> np.ndarray:
    """``value`` -- one number for every layer, or a list of ``L`` -- as an int64 array ``[L]``; a
    one-line error for another shape or numbers that are not whole (``"{what} must be {whole}"``).
    The caller checks the range (a policy's ``k``, a cache's capacity)."""
    arr = np.asarray(value)
    if arr.ndim == 0:
        arr = np.full(L, arr)
    if arr.shape != (L,):
        raise DipsimError(f"{what} must be an int or a list of {L} ints (one per layer), got shape {list(arr.shape)}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.all(np.mod(arr, 1) == 0)):
        raise DipsimError(f"{what} must be {whole}, got {arr.tolist()}")
    return arr.astype(np.int64)


def max_workers() -> int:
    """The most worker processes or threads a run starts on this machine: 4 per CPU it may use (each
    holds its own data; more only queue for the cores and fill the memory)."""
    import os

    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return 4 * max(cpus, 1)


# ----------------------------------------------------------------------------------------- checks
def to_number(v: Any, where: str) -> float:
    """A finite real number from a number or a numeric string; bools, dates and the rest refused."""
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise _fail(where, f"expected a number, got {_show(v)}")
    if isinstance(v, str):
        if not _NUMBER.match(v):
            raise _fail(where, f"expected a number, got {_show(v)}")
        v = float(v)
    x = float(v)
    if not math.isfinite(x):
        raise _fail(where, f"expected a finite number, got {_show(v)}")
    return x


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
           integer: bool = False, optional: bool = False) -> Check:
    """A number in [lo, hi] (``lo_open``/``hi_open``: excluded ends); ``integer``: whole numbers, at
    most 2^31 unless ``hi`` says otherwise (counts of tokens, layers, columns)."""
    shown_hi = hi
    if integer and hi is None:
        hi = float(1 << 31)

    def fmt(v: float) -> str:          # 67108864, not 6.71089e+07
        return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"

    lo_t = "" if lo is None else ("(" if lo_open else "[") + fmt(lo)
    hi_t = "" if shown_hi is None else fmt(shown_hi) + (")" if hi_open else "]")
    what = ("a whole number" if integer else "a number") + (
        f" in {lo_t}, {hi_t}" if lo is not None and shown_hi is not None
        else f" >= {fmt(lo)}" if lo is not None and not lo_open else f" > {fmt(lo)}" if lo is not None else "")
    if integer and shown_hi is None:
        what += " (below 2^31)"

    def check(v: Any, where: str) -> Any:
        if v is None and optional:
            return None
        try:
            x = to_number(v, where)
        except DipsimError:
            raise _fail(where, f"expected {what}, got {_show(v)}") from None
        if integer and x != int(x):
            raise _fail(where, f"expected {what}, got {_show(v)}")
        if (lo is not None and (x < lo or (lo_open and x == lo))) or (hi is not None and (x > hi or (hi_open and x == hi))):
            raise _fail(where, f"must be {what}, got {_show(v)}")
        return int(x) if integer else x
    return says(what + (" or none" if optional else ""))(check)


@says("a fraction in (0, 1], or a list of them (one per layer)")
def fraction_or_list(v: Any, where: str) -> float | tuple[float, ...] | None:
    """A keep: a fraction in (0, 1], or a list of them (one per layer); None: not given."""
    if v is None:
        return None
    one = number(0, 1, lo_open=True)
    if isinstance(v, str) and "," in v:
        v = v.split(",")
    if isinstance(v, (list, tuple)):
        if not v:
            raise _fail(where, "expected a fraction in (0, 1] or a non-empty list of them (one per layer), got []")
        return tuple(one(x, f"{where}[{i}]") for i, x in enumerate(v))
    return one(v, where)


def size(*, optional: bool = True, hi: float | None = None) -> Check:
    """A size in bytes: a number (``2e9`` too) or a string with a unit (``1GB``, ``512 MiB``); at
    most ``hi`` bytes when given."""
    def check(v: Any, where: str) -> Any:
        if v is None and optional:
            return None
        if isinstance(v, str) and _NUMBER.match(v):
            v = float(v)
        file, _, key = where.rpartition(": ")
        x = parse_quantity(v, "size", where=file or where, fld=key or "value", zero_ok=True)
        if hi is not None and x > hi:
            raise _fail(where, f"{_show(v)} is more than {fmt_size(hi)}; a typo or a missing unit?")
        return x
    upto = f" up to {fmt_size(hi)}" if hi is not None else ""
    return says("bytes: a number, or with a unit (512MB, 2GiB)" + upto + (" or none" if optional else ""))(check)


@says("true or false")
def boolean(v: Any, where: str) -> bool:
    """True or False (also the strings true/false, yes/no, 1/0, as a command line gives them)."""
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
        return v.strip().lower() in ("true", "yes", "1")
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    raise _fail(where, f"expected true or false, got {_show(v)}")


@says("true, false or device (the device profile's assumption)")
def boolean_or_device(v: Any, where: str) -> bool | None:
    """True, False, or None: left to the device profile's own assumption."""
    return None if v is None or v == "device" else boolean(v, where)


def choice(*values: str, kind: str = "value", optional: bool = False) -> Check:
    """One of ``values`` (``kind`` names what they are in the error)."""
    def check(v: Any, where: str) -> Any:
        if v is None and optional:
            return None
        if not isinstance(v, str) or v not in values:
            raise _fail(where, f"unknown {kind} {_show(v)}; allowed: {', '.join(values)}")
        return v
    return says("one of " + ", ".join(values) + (" or none" if optional else ""))(check)


def name_in(kind: str, names: Callable[[], Sequence[str]]) -> Check:
    """A registered name (a masking or cache policy, ...), checked against the registry when used."""
    def check(v: Any, where: str) -> Any:
        allowed = list(names())
        if not isinstance(v, str) or v not in allowed:
            raise _fail(where, f"unknown {kind} {_show(v)}; allowed: {', '.join(allowed)}")
        return v
    return says(f"a registered {kind} name")(check)


def text(*, optional: bool = True) -> Check:
    def check(v: Any, where: str) -> Any:
        if v is None and optional:
            return None
        if not isinstance(v, str) or not v.strip():
            raise _fail(where, f"expected a non-empty text, got {_show(v)}")
        return v
    return says("a text" + (" or none" if optional else ""))(check)


@says("a mapping of parameter names to plain values (KEY=VALUE on a command line)")
def mapping(v: Any, where: str) -> dict[str, Any]:
    """A mapping of names to plain values (the parameters of a policy); its keys are checked by the
    policy it belongs to."""
    if v is None:
        return {}
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise _fail(where, f"expected a mapping of parameter names to values, got {_show(v)}")
    for k, x in v.items():
        if isinstance(x, (dict, list, tuple, set, bytes)) or (isinstance(x, float) and not math.isfinite(x)):
            raise _fail(child(where, k), f"expected a plain value (number, text, true/false), got {_show(x)}")
    return dict(v)


# ----------------------------------------------------------------------------------------- configs
class ConfigBase:
    """Mixin of the config dataclasses: read a mapping with every value checked; write one back."""

    @classmethod
    def from_mapping(cls, data: Any, where: str = "config", *, extra: Sequence[str] = ()):
        """Build from a mapping, refusing unknown keys (``extra``: keys the caller handles itself,
        passed over here)."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise _fail(where, f"expected a mapping of {', '.join(f.name for f in params_of(cls))}, got {_show(data)}")
        fields = {f.name: f for f in params_of(cls)}
        unknown = [k for k in data if k not in fields and k not in extra]
        if unknown:
            raise _fail(where, f"unknown key {_show(unknown[0])}; allowed: {', '.join(list(fields) + list(extra))}")
        values = {name: f.metadata["check"](data[name], child(where, name)) if name in data else f.default
                  for name, f in fields.items()}
        return cls(**values)

    def to_mapping(self, *, skip_defaults: bool = False) -> dict[str, Any]:
        out = {}
        for f in params_of(type(self)):
            v = getattr(self, f.name)
            if skip_defaults and v == f.default:
                continue
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out
