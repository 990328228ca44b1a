"""Hardware profiles: the YAML schema, loading by name or path, validation, and the listing.

Profiles live in ``hardware_profiles/{flash,dram,compute,devices}/<name>.yaml`` (or
``$DIPSIM_HARDWARE_PROFILES``). A YAML path works wherever a name does.

    from simulator.hardware import load_part, load_device
    ufs = load_part("flash", "ufs-4.0")          # FlashSpec
    dev = load_device("phone-8gb-ufs40")         # Device: flash + dram + compute + capacities
    dev.flash.model().batch_time(sizes)

Values
    A field is a bare value or ``{value: ..., source: "..."}`` / ``{value: ..., assumed: "why"}``.
    A bare value is covered by the file's top-level ``source:``; without one it is an error, so
    every number in a profile says where it comes from. Quantities take a unit string or a number
    in base units (bytes, bytes/s, seconds, J/byte, FLOP/s):
        sizes     B, kB/KB, MB, GB, TB (powers of 10); KiB, MiB, GiB, TiB (powers of 2)
        rates     a size per second: MB/s, GB/s, GiB/s, ...; bits: Mb/s, Gb/s, Gbit/s
        times     s, ms, us (or µs), ns
        energy    J/B, mJ/B, uJ/B, nJ/B, pJ/B, and per bit: nJ/bit, pJ/bit
        compute   FLOP/s, GFLOP/s, TFLOP/s, FLOPS, TFLOPS, OP/s, TOPS
        counts    whole numbers; ``unbounded`` where allowed
    ``unbounded`` (or YAML ``.inf``) is accepted by the flash fields that may be infinite.

Flash part (``hardware_profiles/flash/<name>.yaml``)::

    name: ufs-4.0
    description: ...
    source: "..."                         # covers bare values
    latency: {value: 50 us, assumed: "..."}
    unit_bandwidth: {value: 270 MB/s, assumed: "..."}
    units: {value: 16, assumed: "..."}
    queue_depth: {value: 32, source: "..."}
    link_bandwidth: {value: 5711 MB/s, source: "..."}
    page_bytes: 4 KiB
    max_request_bytes: 512 KiB
    random_penalty: 0 us                  # optional, default 0
    host_overhead: 0 us                   # optional, default 0: host submission time per request
    read_energy_per_byte: 0.42 nJ/B       # optional
    cited:                                # figures the part must reproduce (tests check 15%)
      source: "..."
      rand_4k_iops: 244140
      rand_4k_qd: 32
      seq_read: 4200 MB/s
      seq_block: 512 KiB
      seq_qd: 32
      also: [{iops | bandwidth: ..., block: ..., qd: ..., pattern: random | sequential, source: "..."}]

DRAM part: ``bandwidth`` (peak), ``latency``, optional ``efficiency`` (sustained share of the peak,
default 1) and ``read_energy_per_byte``. Compute part: ``fp16_flops`` (dense peak), optional
``int8_ops`` and ``efficiency`` (default 1).

Device (``hardware_profiles/devices/<name>.yaml``)::

    name: phone-8gb-ufs40
    source: "..."
    flash: ufs-4.0                        # a part name, a YAML path, or the part inline (a mapping)
    dram: lpddr5x-8533
    compute: phone-npu                    # optional; null for no compute term
    dram_capacity: 8 GiB
    usable_dram_fraction: {value: 0.5, assumed: "..."}   # share of DRAM the model may use; default 1
    overrides:                            # optional: replace a few fields of the named parts
      dram: {bandwidth: {value: 59.6 GB/s, source: "..."}}

Every problem is a one-line :class:`DipsimError` naming the file, the field and what is allowed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from common.errors import DipsimError
from common.tables import format_table
from common.units import INF, field_error as _err, fmt_count, fmt_rate, fmt_size, fmt_time, parse_quantity

KINDS = ("flash", "dram", "compute", "device")
PART_KINDS = ("flash", "dram", "compute")
FOLDERS = {"flash": "flash", "dram": "dram", "compute": "compute", "device": "devices"}


def profiles_dir() -> Path:
    """Where the shipped profiles live (``$DIPSIM_HARDWARE_PROFILES`` overrides)."""
    env = os.environ.get("DIPSIM_HARDWARE_PROFILES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "hardware_profiles"


def _show(path: str | Path) -> str:
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(p)



# --------------------------------------------------------------------------- schema
@dataclass(frozen=True)
class Field:
    kind: str                 # size | rate | time | energy | flops | count | fraction | number
    required: bool = True
    default: Any = None
    zero_ok: bool = False
    inf_ok: bool = False
    integer: bool = False
    help: str = ""


FLASH_FIELDS: dict[str, Field] = {
    "latency": Field("time", zero_ok=True, help="per-request time before data flows (command overhead + NAND tR)"),
    "unit_bandwidth": Field("rate", inf_ok=True, help="bytes/s one internal parallel unit streams at"),
    "units": Field("count", inf_ok=True, help="internal parallel units (channels x dies)"),
    "queue_depth": Field("count", inf_ok=True, help="host queue depth (requests outstanding at most)"),
    "link_bandwidth": Field("rate", inf_ok=True, help="host interface bytes/s, shared by all units"),
    "page_bytes": Field("size", integer=True, help="read granularity: requests are aligned to pages"),
    "max_request_bytes": Field("size", inf_ok=True, integer=True, help="longer reads are split"),
    "random_penalty": Field("time", required=False, default=0.0, zero_ok=True,
                            help="extra latency of a request that does not continue the previous one"),
    "host_overhead": Field("time", required=False, default=0.0, zero_ok=True,
                           help="host time to submit one request (driver, syscall), serial over requests"),
    "read_energy_per_byte": Field("energy", required=False, zero_ok=True, help="J per byte read"),
}
DRAM_FIELDS: dict[str, Field] = {
    "bandwidth": Field("rate", help="peak bytes/s (bus width x transfer rate)"),
    "latency": Field("time", zero_ok=True, help="access latency"),
    "efficiency": Field("fraction", required=False, default=1.0, help="sustained share of the peak"),
    "read_energy_per_byte": Field("energy", required=False, zero_ok=True, help="J per byte read"),
}
COMPUTE_FIELDS: dict[str, Field] = {
    "fp16_flops": Field("flops", help="dense fp16 peak FLOP/s"),
    "int8_ops": Field("ops", required=False, help="dense int8 peak OP/s"),
    "efficiency": Field("fraction", required=False, default=1.0, help="achieved share of the peak"),
}
NUMERIC_FIELDS = {"flash": FLASH_FIELDS, "dram": DRAM_FIELDS, "compute": COMPUTE_FIELDS}
META_FIELDS = ("name", "kind", "description", "source", "notes")
DEVICE_FIELDS = ("name", "kind", "description", "source", "notes", "flash", "dram", "compute", "dram_capacity",
                 "usable_dram_fraction", "overrides")
VALUE_KEYS = ("value", "source", "assumed", "note")
CITED_FIELDS = ("source", "assumed", "note", "rand_4k_iops", "rand_4k_qd", "seq_read", "seq_block", "seq_qd", "also")
ALSO_FIELDS = ("iops", "bandwidth", "block", "qd", "pattern", "source", "assumed", "note")


@dataclass(frozen=True)
class CitedFigure:
    """One figure a flash profile cites: ``iops`` (requests/s) or ``bandwidth`` (bytes/s) at a
    request size and queue depth, for a random or sequential pattern."""

    metric: str
    block: int
    queue_depth: float
    value: float
    sequential: bool
    source: str
    label: str = ""

    def predicted(self, model) -> float:
        if self.metric == "iops":
            return model.iops(self.block, self.queue_depth, sequential=self.sequential)
        return model.bandwidth(self.block, self.queue_depth, sequential=self.sequential)


@dataclass(frozen=True)
class FlashSpec:
    name: str
    latency: float
    unit_bandwidth: float
    units: float
    queue_depth: float
    link_bandwidth: float
    page_bytes: int
    max_request_bytes: float
    random_penalty: float = 0.0
    host_overhead: float = 0.0
    read_energy_per_byte: float | None = None
    cited: tuple[CitedFigure, ...] = ()
    description: str = ""
    path: str = ""
    provenance: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    kind = "flash"

    def model(self):
        from .devices.flash import FlashModel

        return FlashModel.from_spec(self)


@dataclass(frozen=True)
class DramSpec:
    name: str
    bandwidth: float
    latency: float
    efficiency: float = 1.0
    read_energy_per_byte: float | None = None
    description: str = ""
    path: str = ""
    provenance: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    kind = "dram"

    @property
    def effective_bandwidth(self) -> float:
        return self.bandwidth * self.efficiency

    def model(self):
        from .devices.dram import DramModel

        return DramModel.from_spec(self)


@dataclass(frozen=True)
class ComputeSpec:
    name: str
    fp16_flops: float
    int8_ops: float | None = None
    efficiency: float = 1.0
    description: str = ""
    path: str = ""
    provenance: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    kind = "compute"

    def model(self):
        from .devices.compute import ComputeModel

        return ComputeModel.from_spec(self)


@dataclass(frozen=True)
class Device:
    name: str
    flash: FlashSpec
    dram: DramSpec
    dram_capacity: int
    usable_dram_fraction: float = 1.0
    compute: ComputeSpec | None = None
    description: str = ""
    path: str = ""
    provenance: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    kind = "device"

    @property
    def usable_dram_bytes(self) -> int:
        """DRAM the model may use: capacity x usable_dram_fraction (floored to bytes)."""
        return int(math.floor(self.dram_capacity * self.usable_dram_fraction))

    def flash_model(self):
        return self.flash.model()

    def dram_model(self):
        return self.dram.model()

    def compute_model(self):
        return None if self.compute is None else self.compute.model()


SPEC_CLASSES = {"flash": FlashSpec, "dram": DramSpec, "compute": ComputeSpec}


# --------------------------------------------------------------------------- reading files
def _read_yaml(path: Path) -> dict:
    where = _show(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _err(where, None, "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise _err(where, None, f"cannot read the file ({type(e).__name__}: {e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise _err(where, None, f"not valid YAML{line}: {problem}") from None
    if not isinstance(data, dict):
        raise _err(where, None, f"expected a mapping of fields at the top level, got {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise _err(where, None, f"field names must be strings, got {bad[0]!r}")
    return data


def _file_kind(path: Path, data: dict) -> str:
    k = data.get("kind")
    if k is not None:
        k = {"devices": "device"}.get(k, k)
        if k not in KINDS:
            raise _err(_show(path), "kind", f"unknown kind {data['kind']!r}; allowed: {', '.join(KINDS)}")
        return k
    parent = path.parent.name
    for kind, folder in FOLDERS.items():
        if parent == folder:
            return kind
    keys = set(data)
    if keys & {"dram_capacity", "overrides"} or ("flash" in keys and "dram" in keys):
        return "device"
    if keys & {"unit_bandwidth", "units", "link_bandwidth", "page_bytes"}:
        return "flash"
    if "fp16_flops" in keys:
        return "compute"
    if "bandwidth" in keys:
        return "dram"
    raise _err(_show(path), "kind", f"cannot tell what this profile is; add 'kind: ' one of {', '.join(KINDS)}")


def names(kind: str) -> list[str]:
    """Names of the shipped profiles of one kind."""
    if kind not in KINDS:
        raise DipsimError(f"unknown profile kind {kind!r}; allowed: {', '.join(KINDS)}")
    d = profiles_dir() / FOLDERS[kind]
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def _looks_like_path(ref: str | Path) -> bool:
    if isinstance(ref, Path):
        return True
    return ref.endswith((".yaml", ".yml")) or "/" in ref or os.sep in ref


def _locate(kind: str, ref: str | Path, *, base: Path | None = None, where: str | None = None,
            fld: str | None = None) -> Path:
    if isinstance(ref, str) and not ref.strip():
        raise _err(where or "hardware profile", fld, f"empty {kind} name")
    if _looks_like_path(ref):
        p = Path(ref)
        if not p.is_absolute() and base is not None and not p.exists():
            p = base / p
        if not p.exists():
            raise _err(where or _show(p), fld, f"no such file: {_show(p)}")
        return p
    folder = profiles_dir() / FOLDERS[kind]
    p = folder / f"{ref}.yaml"
    if not p.exists():
        what = "device" if kind == "device" else f"{kind} part"
        other = next((k for k in KINDS if k != kind and ref in names(k)), None)
        hint = ""
        if other:
            hint = f" ({ref!r} is {'a device' if other == 'device' else f'a {other} part'}, not a {what})"
        raise _err(where or _show(folder), fld, f"unknown {what} {ref!r}{hint}; allowed: "
                                               f"{', '.join(names(kind)) or '(none)'}, or a path to a .yaml file")
    return p


# --------------------------------------------------------------------------- parsing values
def _split_value(raw: Any, where: str, fld: str) -> tuple[Any, str | None]:
    """A field's value and its provenance text ('source: ...' / 'assumed: ...'), if given inline."""
    if isinstance(raw, dict):
        unknown = [k for k in raw if k not in VALUE_KEYS]
        if unknown:
            raise _err(where, f"{fld}.{unknown[0]}", f"unknown key; allowed: {', '.join(VALUE_KEYS)}")
        if "value" not in raw:
            raise _err(where, fld, "a mapping needs 'value' (and 'source' or 'assumed')")
        prov = []
        for key in ("source", "assumed", "note"):
            if key in raw:
                if not isinstance(raw[key], str) or not raw[key].strip():
                    raise _err(where, f"{fld}.{key}", "must be a non-empty text")
                prov.append(f"{key}: {raw[key].strip()}")
        if not any(p.startswith(("source", "assumed")) for p in prov):
            raise _err(where, fld, "give 'source' (where the number comes from) or 'assumed' (why it was chosen)")
        return raw["value"], "; ".join(prov)
    return raw, None


def _text(data: dict, key: str, where: str) -> str:
    v = data.get(key, "")
    if v is None:
        return ""
    if not isinstance(v, str):
        raise _err(where, key, f"must be a text, got {v!r}")
    return v.strip()


def _parse_field(spec: Field, raw: Any, where: str, fld: str, file_source: str | None) -> tuple[Any, str]:
    value, prov = _split_value(raw, where, fld)
    if prov is None:
        if not file_source:
            raise _err(where, fld, "has no source: write {value: ..., source: \"...\"} or {value: ..., assumed: "
                                   "\"why\"}, or give the file a top-level 'source:'")
        prov = f"source: {file_source}"
    v = parse_quantity(value, spec.kind, where=where, fld=fld, zero_ok=spec.zero_ok, inf_ok=spec.inf_ok,
                       integer=spec.integer)
    if spec.integer and not math.isinf(v):
        v = int(v)
    elif spec.kind == "count" and not math.isinf(v):
        v = int(v)
    return v, prov


def _parse_part(kind: str, data: dict, where: str, name: str, path: str, *, inherited_source: str | None = None,
                prefix: str = ""):
    fields = NUMERIC_FIELDS[kind]
    allowed = list(META_FIELDS) + list(fields) + (["cited"] if kind == "flash" else [])
    for k in data:
        if k not in allowed:
            raise _err(where, f"{prefix}{k}", f"unknown field in a {kind} part; allowed: {', '.join(allowed)}")
    if "kind" in data and {"devices": "device"}.get(data["kind"], data["kind"]) != kind:
        raise _err(where, f"{prefix}kind", f"is {data['kind']!r} but this is loaded as a {kind} part")
    src = _text(data, "source", where) or inherited_source
    values: dict[str, Any] = {}
    prov: dict[str, str] = {}
    for fname, spec in fields.items():
        if fname not in data or data[fname] is None:
            if spec.required:
                raise _err(where, f"{prefix}{fname}", f"missing ({spec.help}); required fields of a {kind} part: "
                                         f"{', '.join(k for k, s in fields.items() if s.required)}")
            values[fname] = spec.default
            continue
        values[fname], prov[fname] = _parse_field(spec, data[fname], where, f"{prefix}{fname}", src)
    cited: tuple[CitedFigure, ...] = ()
    if kind == "flash" and data.get("cited") is not None:
        cited = _parse_cited(data["cited"], where)
    raw_name = data.get("name", name)
    if not isinstance(raw_name, str) or not raw_name.strip():
        raise _err(where, f"{prefix}name", f"must be a non-empty text, got {raw_name!r}")
    kw = dict(name=raw_name.strip(), description=_text(data, "description", where), path=path, provenance=prov,
              **values)
    if kind == "flash":
        kw["cited"] = cited
    spec_obj = SPEC_CLASSES[kind](**kw)
    _check_model(spec_obj, where, prefix)
    return spec_obj


def _check_model(spec, where: str, prefix: str = "") -> None:
    """Cross-field checks, by building the model (its messages name the parameter)."""
    try:
        spec.model()
    except DipsimError as e:
        msg = str(e)
        for model_prefix in ("flash model: ", "dram model: ", "compute model: "):
            if msg.startswith(model_prefix):
                msg = msg[len(model_prefix):]
        fld = prefix + msg.split(" ", 1)[0]
        raise _err(where, fld, msg.split(" ", 1)[1] if " " in msg else msg) from None


def _parse_cited(raw: Any, where: str) -> tuple[CitedFigure, ...]:
    if not isinstance(raw, dict):
        raise _err(where, "cited", f"must be a mapping of figures, got {raw!r}")
    for k in raw:
        if k not in CITED_FIELDS:
            raise _err(where, f"cited.{k}", f"unknown field; allowed: {', '.join(CITED_FIELDS)}")
    src = _text(raw, "source", where)
    if not src:
        raise _err(where, "cited.source", "missing: say where the cited figures come from")

    def q(key: str, kind: str, integer: bool = False) -> tuple[float, str]:
        v, prov = _split_value(raw[key], where, f"cited.{key}")
        x = parse_quantity(v, kind, where=where, fld=f"cited.{key}", integer=integer)
        return x, prov or f"source: {src}"

    figs: list[CitedFigure] = []
    have_r = [k in raw for k in ("rand_4k_iops", "rand_4k_qd")]
    if any(have_r):
        if not all(have_r):
            missing = "rand_4k_qd" if have_r[0] else "rand_4k_iops"
            raise _err(where, f"cited.{missing}", "missing: rand_4k_iops and rand_4k_qd go together")
        iops, p1 = q("rand_4k_iops", "number")
        qd, p2 = q("rand_4k_qd", "count")
        figs.append(CitedFigure("iops", 4096, int(qd), iops, False, f"{p1} | qd {p2}", "random read"))
    have_s = [k in raw for k in ("seq_read", "seq_block", "seq_qd")]
    if any(have_s):
        if not all(have_s):
            missing = [k for k, h in zip(("seq_read", "seq_block", "seq_qd"), have_s) if not h][0]
            raise _err(where, f"cited.{missing}", "missing: seq_read, seq_block and seq_qd go together")
        bw, p1 = q("seq_read", "rate")
        blk, p2 = q("seq_block", "size", integer=True)
        qd, p3 = q("seq_qd", "count")
        figs.append(CitedFigure("bandwidth", int(blk), int(qd), bw, True, f"{p1} | block {p2} | qd {p3}",
                                "sequential read"))
    also = raw.get("also") or []
    if not isinstance(also, list):
        raise _err(where, "cited.also", f"must be a list of figures, got {also!r}")
    for i, item in enumerate(also):
        w = f"cited.also[{i}]"
        if not isinstance(item, dict):
            raise _err(where, w, f"must be a mapping, got {item!r}")
        for k in item:
            if k not in ALSO_FIELDS:
                raise _err(where, f"{w}.{k}", f"unknown field; allowed: {', '.join(ALSO_FIELDS)}")
        metrics = [m for m in ("iops", "bandwidth") if m in item]
        if len(metrics) != 1:
            raise _err(where, w, "give exactly one of iops, bandwidth")
        for k in ("block", "qd", "pattern"):
            if k not in item:
                raise _err(where, f"{w}.{k}", "missing; a figure needs block, qd, pattern and iops or bandwidth")
        metric = metrics[0]
        value = parse_quantity(item[metric], "number" if metric == "iops" else "rate", where=where, fld=f"{w}.{metric}")
        blk = parse_quantity(item["block"], "size", where=where, fld=f"{w}.block", integer=True)
        qd = parse_quantity(item["qd"], "count", where=where, fld=f"{w}.qd")
        if item["pattern"] not in ("random", "sequential"):
            raise _err(where, f"{w}.pattern", f"unknown pattern {item['pattern']!r}; allowed: random, sequential")
        fsrc = item.get("source") or src
        if not isinstance(fsrc, str):
            raise _err(where, f"{w}.source", "must be a text")
        note = f"; assumed: {item['assumed']}" if item.get("assumed") else ""
        figs.append(CitedFigure(metric, int(blk), int(qd), value, item["pattern"] == "sequential",
                                f"source: {fsrc}{note}", f"{item['pattern']} read"))
    if not figs:
        raise _err(where, "cited", "names no figure; give rand_4k_iops/rand_4k_qd, seq_read/seq_block/seq_qd or also")
    return tuple(figs)


# --------------------------------------------------------------------------- public loaders
def load_part(kind: str, name_or_path: str | Path):
    """A FlashSpec, DramSpec or ComputeSpec from a shipped name or a YAML path."""
    if kind not in PART_KINDS:
        raise DipsimError(f"unknown part kind {kind!r}; allowed: {', '.join(PART_KINDS)}")
    path = _locate(kind, name_or_path)
    data = _read_yaml(path)
    where = _show(path)
    fk = _file_kind(path, data)
    if fk != kind:
        what = "a device" if fk == "device" else f"a {fk} part"
        raise _err(where, "kind", f"this file is {what}, not a {kind} part; {kind} parts: {', '.join(names(kind))}")
    return _parse_part(kind, data, where, path.stem, str(path))


def load_device(name_or_path: str | Path) -> Device:
    """A Device (flash + DRAM + optional compute + capacities) from a shipped name or a YAML path."""
    path = _locate("device", name_or_path)
    data = _read_yaml(path)
    where = _show(path)
    fk = _file_kind(path, data)
    if fk != "device":
        raise _err(where, "kind", f"this file is a {fk} part, not a device (a device names flash, dram and "
                                  f"dram_capacity); load it with load_part({fk!r}, ...), or use a device: "
                                  f"{', '.join(names('device'))}")
    for k in data:
        if k not in DEVICE_FIELDS:
            raise _err(where, k, f"unknown field in a device; allowed: {', '.join(DEVICE_FIELDS)}")
    src = _text(data, "source", where) or None
    parts: dict[str, Any] = {}
    for kind in PART_KINDS:
        ref = data.get(kind)
        if ref is None:
            if kind == "compute":
                parts[kind] = None
                continue
            raise _err(where, kind, f"missing: a device needs flash, dram and dram_capacity; give a {kind} part "
                                    f"name ({', '.join(names(kind))}), a path, or the part inline")
        if isinstance(ref, dict):
            parts[kind] = _parse_part(kind, ref, where, f"{path.stem}-{kind}", str(path),
                                      inherited_source=src, prefix=f"{kind}.")
        elif isinstance(ref, (str, Path)):
            ppath = _locate(kind, ref, base=path.parent, where=where, fld=kind)
            parts[kind] = load_part(kind, ppath)
        else:
            raise _err(where, kind, f"must be a {kind} part name, a path or a mapping, got {ref!r}")
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise _err(where, "overrides", f"must be a mapping of part kind to fields, got {overrides!r}")
    for kind, fields in overrides.items():
        if kind not in PART_KINDS:
            raise _err(where, f"overrides.{kind}", f"unknown part kind; allowed: {', '.join(PART_KINDS)}")
        if parts.get(kind) is None:
            raise _err(where, f"overrides.{kind}", "the device has no such part to override")
        if not isinstance(fields, dict):
            raise _err(where, f"overrides.{kind}", f"must be a mapping of fields, got {fields!r}")
        table = NUMERIC_FIELDS[kind]
        new: dict[str, Any] = {}
        prov = dict(parts[kind].provenance)
        for fname, raw in fields.items():
            if fname not in table:
                raise _err(where, f"overrides.{kind}.{fname}", f"unknown {kind} field; allowed: {', '.join(table)}")
            new[fname], p = _parse_field(table[fname], raw, where, f"overrides.{kind}.{fname}", src)
            prov[fname] = f"{p} (override in {where})"
        spec = dataclasses.replace(parts[kind], provenance=prov, **new)
        _check_model(spec, where, f"overrides.{kind}.")
        parts[kind] = spec
    dev_prov: dict[str, str] = {}
    if "dram_capacity" not in data or data["dram_capacity"] is None:
        raise _err(where, "dram_capacity", "missing: DRAM capacity in bytes or with a unit, e.g. '8 GiB'")
    cap, dev_prov["dram_capacity"] = _parse_field(Field("size", integer=True), data["dram_capacity"], where,
                                                  "dram_capacity", src)
    frac = 1.0
    if data.get("usable_dram_fraction") is not None:
        frac, dev_prov["usable_dram_fraction"] = _parse_field(Field("fraction"), data["usable_dram_fraction"], where,
                                                              "usable_dram_fraction", src)
    raw_name = data.get("name", path.stem)
    if not isinstance(raw_name, str) or not raw_name.strip():
        raise _err(where, "name", f"must be a non-empty text, got {raw_name!r}")
    return Device(name=raw_name.strip(), flash=parts["flash"], dram=parts["dram"], compute=parts["compute"],
                  dram_capacity=int(cap), usable_dram_fraction=float(frac),
                  description=_text(data, "description", where), path=str(path), provenance=dev_prov)


def load_profile(kind: str, name_or_path: str | Path):
    """``load_device`` for kind 'device', else ``load_part``."""
    kind = {"devices": "device"}.get(kind, kind)
    return load_device(name_or_path) if kind == "device" else load_part(kind, name_or_path)


# --------------------------------------------------------------------------- listing
def _r(v: float | None, nd: int = 4) -> float | None:
    if v is None:
        return None
    if math.isinf(v):
        return v
    return float(f"{v:.{nd}g}")


def _flash_row(s: FlashSpec) -> dict[str, Any]:
    m = s.model()
    rand = next((c for c in s.cited if c.metric == "iops" and c.block == 4096 and not c.sequential), None)
    seq = next((c for c in s.cited if c.metric == "bandwidth" and c.sequential), None)
    qd_r = rand.queue_depth if rand else 32
    blk, qd_s = (seq.block, seq.queue_depth) if seq else (512 * 1024, 32)
    return {"kind": "flash", "name": s.name,
            "seq MB/s": _r(m.bandwidth(blk, qd_s, sequential=True) / 1e6),
            "cited seq MB/s": _r(seq.value / 1e6) if seq else None,
            "seq block": fmt_size(blk), "seq QD": qd_s,
            "4K IOPS": _r(m.iops(4096, qd_r)), "cited 4K IOPS": _r(rand.value) if rand else None, "4K QD": qd_r,
            "4K QD1 IOPS": _r(m.iops(4096, 1)),
            "4K latency us": _r(m.unloaded_latency(4096) * 1e6),
            "link MB/s": _r(s.link_bandwidth / 1e6), "units": fmt_count(s.units), "queue": fmt_count(s.queue_depth)}


def _dram_row(s: DramSpec) -> dict[str, Any]:
    return {"kind": "dram", "name": s.name, "GB/s": _r(s.effective_bandwidth / 1e9), "peak GB/s": _r(s.bandwidth / 1e9),
            "latency ns": _r(s.latency * 1e9),
            "pJ/B": None if s.read_energy_per_byte is None else _r(s.read_energy_per_byte * 1e12)}


def _compute_row(s: ComputeSpec) -> dict[str, Any]:
    return {"kind": "compute", "name": s.name, "fp16 TFLOPS": _r(s.fp16_flops / 1e12),
            "int8 TOPS": None if s.int8_ops is None else _r(s.int8_ops / 1e12), "efficiency": s.efficiency}


def _device_row(d: Device) -> dict[str, Any]:
    fm = d.flash.model()
    size = fm.max_request_bytes if not math.isinf(fm.max_request_bytes) else 2 ** 20
    return {"kind": "device", "name": d.name, "flash": d.flash.name, "dram": d.dram.name,
            "compute": d.compute.name if d.compute else None,
            "DRAM GiB": _r(d.dram_capacity / 2 ** 30), "usable GiB": _r(d.usable_dram_bytes / 2 ** 30),
            "DRAM GB/s": _r(d.dram.effective_bandwidth / 1e9),
            "flash seq MB/s": _r(fm.bandwidth(size, sequential=True) / 1e6),
            "flash 4K IOPS": _r(fm.iops(4096)),
            "fp16 TFLOPS": _r(d.compute.fp16_flops / 1e12) if d.compute else None}


ROWS: dict[str, Callable[[Any], dict[str, Any]]] = {"flash": _flash_row, "dram": _dram_row, "compute": _compute_row,
                                                     "device": _device_row}


def list_profiles(kind: str | None = None) -> list[dict[str, Any]]:
    """One row per shipped profile (all kinds, or one) with its key figures.

    Flash rows give the model's predictions next to the cited figures: sequential MB/s at the
    cited block and queue depth, 4 KiB random IOPS at the cited queue depth, QD1 IOPS and the
    unloaded 4 KiB latency. DRAM rows give sustained GB/s; compute rows TFLOPS; device rows the parts,
    capacity and the resulting bandwidths.
    """
    kinds = KINDS if kind is None else ({"devices": "device"}.get(kind, kind),)
    rows = []
    for k in kinds:
        if k not in KINDS:
            raise DipsimError(f"unknown profile kind {kind!r}; allowed: {', '.join(KINDS)}")
        for n in names(k):
            rows.append(ROWS[k](load_profile(k, n)))
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    return format_table([{c: v for c, v in r.items() if c != "kind"} for r in rows], missing="-",
                        empty="(no profiles)")


def profiles_table(kind: str | None = None) -> str:
    """The listing as aligned text, one table per kind."""
    rows = list_profiles(kind)
    out = []
    for k in KINDS:
        sel = [r for r in rows if r["kind"] == k]
        if sel:
            title = {"flash": "flash (predicted by the model vs cited)", "device": "devices"}.get(k, k)
            out.append(f"{title}\n{_table(sel)}")
    return "\n\n".join(out) if out else "(no profiles)"


def describe_profile(name_or_path: str | Path, kind: str | None = None) -> str:
    """Every field of one profile in readable units, each with its source or assumption."""
    if kind is None:
        if _looks_like_path(name_or_path):
            p = _locate("flash", name_or_path)
            kind = _file_kind(p, _read_yaml(p))
        else:
            hits = [k for k in KINDS if str(name_or_path) in names(k)]
            if not hits:
                allowed = ", ".join(n for k in KINDS for n in names(k))
                raise DipsimError(f"unknown profile {str(name_or_path)!r}; allowed: {allowed}, or a path to a .yaml file")
            kind = hits[0]
    obj = load_profile(kind, name_or_path)
    lines = [f"{obj.name} ({kind}): {obj.description}".rstrip(": ")]
    lines += _describe_fields(obj, "  ")
    return "\n".join(lines)


_FMT = {"size": fmt_size, "rate": fmt_rate, "time": fmt_time, "count": fmt_count,
        "fraction": lambda v: f"{v:g}", "energy": lambda v: f"{v * 1e12:.4g} pJ/B",
        "flops": lambda v: f"{v / 1e12:.4g} TFLOP/s", "ops": lambda v: f"{v / 1e12:.4g} TOPS"}


def _describe_fields(obj, indent: str) -> list[str]:
    lines = []
    if isinstance(obj, Device):
        lines.append(f"{indent}dram_capacity: {fmt_size(obj.dram_capacity)}  [{obj.provenance.get('dram_capacity', '')}]")
        lines.append(f"{indent}usable_dram_fraction: {obj.usable_dram_fraction:g}  "
                     f"[{obj.provenance.get('usable_dram_fraction', 'default')}]")
        for k in PART_KINDS:
            part = getattr(obj, k)
            if part is None:
                lines.append(f"{indent}{k}: none")
                continue
            lines.append(f"{indent}{k}: {part.name}")
            lines += _describe_fields(part, indent + "  ")
        return lines
    for fname, spec in NUMERIC_FIELDS[obj.kind].items():
        v = getattr(obj, fname)
        shown = "-" if v is None else _FMT[spec.kind](v)
        lines.append(f"{indent}{fname}: {shown}  [{obj.provenance.get(fname, 'default')}]")
    if isinstance(obj, FlashSpec) and obj.cited:
        m = obj.model()
        for c in obj.cited:
            pred = c.predicted(m)
            unit = (lambda v: f"{v:,.0f} IOPS") if c.metric == "iops" else fmt_rate
            lines.append(f"{indent}cited {c.label}, {fmt_size(c.block)} at QD{c.queue_depth}: {unit(c.value)}, "
                         f"model {unit(pred)} ({(pred / c.value - 1) * 100:+.1f}%)")
    return lines


# --------------------------------------------------------------------------- CLI pieces
def add_profiles_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``profiles`` to an argparse subparsers object; dispatch to :func:`run_profiles`."""
    p = subparsers.add_parser(
        "profiles", help="list the hardware profiles with their key figures (or show one in detail)",
        description="List the shipped hardware profiles (flash, DRAM, compute, devices) with their key figures; "
                    "flash rows show the model's predicted sequential bandwidth and 4 KiB IOPS next to the figures "
                    "the profile cites. With a NAME or a YAML path, show every field with its source.")
    p.add_argument("name", nargs="?", help="a profile name or a .yaml path to show in detail")
    p.add_argument("--kind", choices=list(KINDS), help="only this kind")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=run_profiles)
    return p


def run_profiles(args: argparse.Namespace) -> int:
    name = getattr(args, "name", None)
    kind = getattr(args, "kind", None)
    fmt = getattr(args, "format", "table")
    if name:
        print(describe_profile(name, kind))
        return 0
    if fmt == "json":
        rows = [{k: ("unbounded" if isinstance(v, float) and math.isinf(v) else v) for k, v in r.items()}
                for r in list_profiles(kind)]
        print(json.dumps(rows, indent=2))
        return 0
    print(profiles_table(kind))
    return 0
