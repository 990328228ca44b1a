"""``dipsim calibrate`` and ``dipsim validate``: this machine's storage, measured and compared."""
from __future__ import annotations

import argparse
import json
import math

from common.errors import DipsimError
from common.jsonio import json_default
from common.units import parse_quantity

from ..disk import IO_BACKENDS
from .options import add_verb, arg_type, replay_config
from .replay import add_replay_options


def _size(text: str) -> int:
    try:
        v = parse_quantity(text, "size", where="value", fld="size")
    except DipsimError as e:
        raise argparse.ArgumentTypeError(str(e)) from None   # it refuses 0, negative and infinite sizes
    return int(v)


def _sizes(text: str) -> list[int]:
    return [_size(x) for x in text.split(",")]


_depths = arg_type(lambda t: [int(v) for v in t.split(",")], lambda vals: bool(vals) and min(vals) >= 1,
                   "comma-separated queue depths >= 1")
_seconds = arg_type(float, lambda v: math.isfinite(v) and 0 < v <= 60, "seconds in (0, 60]")
_passes = arg_type(int, lambda v: 1 <= v <= 100, "a whole number in [1, 100]")


def add_parser(sub) -> None:
    s = add_verb(sub, "calibrate", run_calibrate,
                 "measure this machine's storage with direct I/O and fit a device profile (its flash part fitted)")
    s.add_argument("--file", required=True, help="file to read (on the storage to measure; not tmpfs)")
    s.add_argument("--out", required=True, help="device profile to write, e.g. my-disk.yaml")
    s.add_argument("--size", type=_size, default=1 << 30, help="file size (default 1 GiB)")
    s.add_argument("--sizes", type=_sizes, default=_sizes("4KiB,16KiB,64KiB,256KiB,1MiB"),
                   help="request sizes, comma-separated (default 4KiB,16KiB,64KiB,256KiB,1MiB)")
    s.add_argument("--depths", type=_depths, default=[1, 2, 4, 8, 16, 32], help="queue depths (default 1,2,4,8,16,32)")
    s.add_argument("--seconds", type=_seconds, default=0.25,
                   help="seconds per (size, depth) point and pass (default 0.25)")
    s.add_argument("--passes", type=_passes, default=3,
                   help="passes over the grid, in shuffled order; each point keeps its median pass (default 3)")
    s.add_argument("--io", choices=IO_BACKENDS, default="auto",
                   help="how reads are issued: Linux native AIO (one thread, exact queue depth) or one thread per "
                        "outstanding read (default auto: aio where available)")
    s.add_argument("--name", help="profile name (default: the file name of --out)")
    s.add_argument("--format", choices=["table", "json"], default="table", help="output format (default table)")
    s.add_argument("-q", "--quiet", action="store_true")

    s = add_verb(sub, "validate", run_validate,
                 "real direct reads of a configuration's miss stream vs the simulated time")
    s.add_argument("--trace", required=True, help="trace whose miss stream is read (from dipsim trace)")
    s.add_argument("--profile", "--device", dest="profile", required=True,
                   help="device profile name or YAML path (e.g. from dipsim calibrate; --device is the same option)")
    s.add_argument("--file", required=True, help="data file on the storage the profile describes")
    s.add_argument("--rounds", type=arg_type(int, lambda v: 1 <= v <= 1000, "a whole number in [1, 1000]"), default=3,
                   help="interleaved measured/simulated rounds (default 3)")
    s.add_argument("--io", choices=IO_BACKENDS, default="auto",
                   help="how reads are issued (use the same as for calibrate; default auto: aio where available)")
    add_replay_options(s)
    from ..config import LayoutConfig
    from .options import add_config_options

    add_config_options(s, LayoutConfig, title="layout of the weights on flash", prefix="layout")
    s.add_argument("--format", choices=["table", "json"], default="table", help="output format (default table)")
    s.add_argument("-q", "--quiet", action="store_true")


def run_calibrate(a: argparse.Namespace) -> int:
    """Random O_DIRECT reads of FILE (created with random data if missing) at request sizes 4 KiB - 1 MiB and
    queue depths 1 - 32; fits the flash model (latency, unit bandwidth, units, link bandwidth) and writes a
    device profile YAML."""
    from common.io import check_outputs

    from ..disk import calibrate

    check_outputs([("--out", a.out, (".yaml", ".yml"))], [("--file", a.file)])
    res = calibrate(a.file, a.out, size=a.size, sizes=a.sizes, depths=a.depths, seconds=a.seconds, passes=a.passes,
                    name=a.name, progress=not a.quiet, io=a.io)
    fit = res["fit"]
    if a.format == "json":
        print(json.dumps({"profile": res["profile"], "fit": fit, "points": res["points"]}, indent=2))
        return 0
    print(f"fitted: latency {fit['latency'] * 1e6:.1f} us, unit bandwidth {fit['unit_bandwidth'] / 1e6:.0f} MB/s, "
          f"{fit['units']} units, link {fit['link_bandwidth'] / 1e6:.0f} MB/s, host {fit['host_overhead'] * 1e6:.1f} us "
          f"per request; model vs measured: median |error| {fit['median_abs_error']:.1%}, max "
          f"{fit['max_abs_error']:.1%}")
    print(f"wrote {res['profile']} (use it as --profile {res['profile']})")
    return 0


def run_validate(a: argparse.Namespace) -> int:
    """Replay a configuration, lay the MLP weights out in FILE (random data of the same size), read each
    token's misses with O_DIRECT in the order and concurrency the engine assumes, and compare measured with
    simulated flash time per token."""
    from common.io import check_outputs
    from traces.format import load

    from ..disk import validate
    from ..config import LayoutConfig
    from .options import given

    cfg = replay_config(a)
    layout = LayoutConfig.from_mapping(given(a, LayoutConfig, prefix="layout"), "command line: layout")
    check_outputs([("--file", a.file)], [("--trace", a.trace), ("--profile", a.profile)])
    t = load(a.trace)
    res = validate(t, a.profile, file=a.file, config=cfg, rounds=a.rounds, tokens=cfg.tokens or 32,
                   progress=not a.quiet, layout=layout, io=a.io)
    if a.format == "json":
        print(json.dumps(res, indent=2, default=json_default))
        return 0
    print(f"{res['tokens']} tokens x {res['rounds']} rounds, {res['requests_per_token']:.0f} requests per token, "
          f"up to {res['parallelism']} reads outstanding ({res['io']})")
    print(f"  measured:  {res['measured_s_per_token'] * 1e3:.3f} ms/token flash")
    print(f"  simulated: {res['simulated_s_per_token'] * 1e3:.3f} ms/token flash")
    print(f"  median error per token: {res['median_error']:.1%} (signed {res['median_signed_error']:+.1%}); per round: "
          + ", ".join(f"{e:+.1%}" for e in res["round_median_errors"])
          + f"; measured spread over rounds {res['measured_spread']:.0%}")
    return 0
