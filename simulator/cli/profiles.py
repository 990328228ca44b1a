"""``dipsim profiles``: the hardware profiles, their key figures and where every figure comes from."""
from __future__ import annotations

import argparse
import json
import math

from ..hardware import KINDS, describe_profile, list_profiles, profiles_dir, profiles_table
from .options import add_verb


def add_parser(sub) -> None:
    s = add_verb(sub, "profiles", run, "list the hardware profiles with their key figures (or show one in detail)")
    s.add_argument("name", nargs="?", help="a profile name or a .yaml path to show in detail")
    s.add_argument("--kind", choices=list(KINDS), help="only this kind")
    s.add_argument("--format", choices=["table", "json"], default="table", help="output format (default table)")


def run(a: argparse.Namespace) -> int:
    """List the shipped hardware profiles (flash, DRAM, compute, devices) with their key figures; flash rows
    show the model's predicted sequential bandwidth and 4 KiB IOPS next to the figures the profile cites.
    With a NAME or a YAML path, show every field with its source. Every figure's source is written out in
    hardware_profiles/SOURCES.md."""
    if a.name:
        print(describe_profile(a.name, a.kind))
        print(f"\nsources: {profiles_dir() / 'SOURCES.md'}")
        return 0
    if a.format == "json":
        rows = [{k: ("unbounded" if isinstance(v, float) and math.isinf(v) else v) for k, v in r.items()}
                for r in list_profiles(a.kind)]
        print(json.dumps(rows, indent=2))
        return 0
    print(profiles_table(a.kind))
    print(f"\nwhere every figure comes from: {profiles_dir() / 'SOURCES.md'}")
    return 0
