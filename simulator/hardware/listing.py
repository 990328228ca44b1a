"""The listing of profiles (``dipsim profiles``): one row per profile with its key figures, and every
field of one profile with its source."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from common.errors import DipsimError
from common.tables import format_table
from common.units import fmt_count, fmt_rate, fmt_size, fmt_time

from .load import file_kind, load_profile, locate, looks_like_path, names, read_yaml
from .schema import ComputeSpec, DEVICE_VALUE_FIELDS, Device, DramSpec, FlashSpec, KINDS, NUMERIC_FIELDS, PART_KINDS


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
            "seq_read_mb_per_s": _r(m.bandwidth(blk, qd_s, sequential=True) / 1e6),
            "cited_seq_read_mb_per_s": _r(seq.value / 1e6) if seq else None,
            "seq_block": fmt_size(blk), "seq_queue_depth": qd_s,
            "rand_4k_iops": _r(m.iops(4096, qd_r)), "cited_rand_4k_iops": _r(rand.value) if rand else None, "rand_4k_queue_depth": qd_r,
            "rand_4k_qd1_iops": _r(m.iops(4096, 1)),
            "rand_4k_latency_us": _r(m.unloaded_latency(4096) * 1e6),
            "link_mb_per_s": _r(s.link_bandwidth / 1e6), "units": fmt_count(s.units), "queue_depth": fmt_count(s.queue_depth)}


def _dram_row(s: DramSpec) -> dict[str, Any]:
    return {"kind": "dram", "name": s.name, "sustained_gb_per_s": _r(s.model().effective_bandwidth / 1e9), "peak_gb_per_s": _r(s.bandwidth / 1e9),
            "latency_ns": _r(s.latency * 1e9),
            "read_energy_pj_per_byte": None if s.read_energy_per_byte is None else _r(s.read_energy_per_byte * 1e12)}


def _compute_row(s: ComputeSpec) -> dict[str, Any]:
    return {"kind": "compute", "name": s.name, "fp16_tflops": _r(s.fp16_flops / 1e12),
            "int8_tops": None if s.int8_ops is None else _r(s.int8_ops / 1e12), "efficiency": s.efficiency}


def _device_row(d: Device) -> dict[str, Any]:
    fm = d.flash.model()
    size = fm.max_request_bytes if not math.isinf(fm.max_request_bytes) else 2 ** 20
    return {"kind": "device", "name": d.name, "flash": d.flash.name, "dram": d.dram.name,
            "compute": d.compute.name if d.compute else None,
            "dram_gib": _r(d.dram_capacity / 2 ** 30), "usable_dram_gib": _r(d.usable_dram_bytes / 2 ** 30),
            "dram_gb_per_s": _r(d.dram_model().effective_bandwidth / 1e9),
            "flash_seq_read_mb_per_s": _r(fm.bandwidth(size, sequential=True) / 1e6),
            "flash_rand_4k_iops": _r(fm.iops(4096)),
            "fp16_tflops": _r(d.compute.fp16_flops / 1e12) if d.compute else None}


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
        if looks_like_path(name_or_path):
            p = locate("flash", name_or_path)
            kind = file_kind(p, read_yaml(p))
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
        for k, f in DEVICE_VALUE_FIELDS.items():
            v = getattr(obj, k)
            shown = str(v).lower() if f.kind == "bool" else _FMT[f.kind](v)
            lines.append(f"{indent}{k}: {shown}  [{obj.provenance.get(k, 'default')}]")
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
