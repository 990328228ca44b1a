"""Calibration fit, and calibrate / validate on this machine's real storage (small and quick)."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

import traces
from simulator import disk
from simulator.devices.flash import FlashModel
from simulator.hardware import load_device
from common.errors import DipsimError

from expected_replay import TRACE


def measured_by(truth: FlashModel) -> list[dict]:
    """The points calibrate would measure on a device that behaves exactly as ``truth``."""
    points = []
    for size in disk.DEFAULT_SIZES:
        for d in disk.DEFAULT_DEPTHS:
            bw = truth.bandwidth(size, d)
            points.append({"size": size, "depth": d, "bandwidth": bw, "iops": bw / size})
    return points


def test_fit_recovers_known_parameters():
    truth = FlashModel(latency=80e-6, unit_bandwidth=400e6, units=6, queue_depth=32, link_bandwidth=1.5e9,
                       host_overhead=12e-6)
    fit = disk.fit_flash(measured_by(truth))
    assert fit["units"] == 6
    assert fit["latency"] == pytest.approx(80e-6, rel=1e-3)
    assert fit["unit_bandwidth"] == pytest.approx(400e6, rel=1e-3)
    assert fit["link_bandwidth"] == pytest.approx(1.5e9, rel=1e-3)  # binding at large requests
    assert fit["host_overhead"] == pytest.approx(12e-6, rel=1e-2)
    assert fit["max_abs_error"] < 1e-3


@pytest.mark.parametrize("unit_bandwidth", [1e13, 1e15])
def test_fit_stays_loadable_when_a_parameter_cannot_be_identified(unit_bandwidth, tmp_path):
    """A device whose units are never the bottleneck (latency and the link decide every point, as a
    busy shared disk can look) leaves unit_bandwidth free: unbounded, the fit drifted to 5e17 B/s and
    wrote a profile its own loader refused. Bounded by the schema's plausible ranges, it loads."""
    truth = FlashModel(latency=150e-6, unit_bandwidth=unit_bandwidth, units=4, queue_depth=32,
                       link_bandwidth=0.8e9, host_overhead=5e-6)
    fit = disk.fit_flash(measured_by(truth))
    from simulator.disk.calibrate import FIT_FIELDS, fit_bounds

    lo, hi = np.exp(fit_bounds())
    for i, name in enumerate(FIT_FIELDS):
        assert lo[i] * (1 - 1e-9) <= fit[name] <= hi[i] * (1 + 1e-9), name
    assert fit["median_abs_error"] < 0.05     # the predictions do not depend on the free parameter


def _direct_io_ok(path) -> bool:
    try:
        path.write_bytes(b"\0" * 8192)
        os.close(os.open(path, os.O_RDONLY | os.O_DIRECT))
        return True
    except (OSError, AttributeError):
        return False


@pytest.fixture
def work_dir(tmp_path_factory):
    # O_DIRECT needs a real file system; /tmp may be tmpfs. Use the repository's disk.
    d = tmp_path_factory.mktemp("disk") if _direct_io_ok(tmp_path_factory.mktemp("probe") / "p") else None
    if d is None:
        here = os.path.join(os.path.dirname(__file__), "..", ".pytest-disk")
        os.makedirs(here, exist_ok=True)
        from pathlib import Path

        d = Path(here)
    return d


def test_calibrate_writes_a_loadable_profile(work_dir):
    out = work_dir / "disk.yaml"
    res = disk.calibrate(work_dir / "data.bin", out, size=64 << 20, sizes=(4096, 65536), depths=(1, 4),
                         seconds=0.1, progress=False)
    dev = load_device(out)
    assert dev.flash.units >= 1 and dev.flash.latency > 0 and dev.flash.page_bytes == 4096
    assert len(res["points"]) == 4 and all(p["iops"] > 0 for p in res["points"])
    assert math.isfinite(res["fit"]["median_abs_error"])


def test_validate_reports_measured_and_simulated(work_dir):
    prof = work_dir / "disk.yaml"
    disk.calibrate(work_dir / "data.bin", prof, size=64 << 20, sizes=(4096, 65536), depths=(1, 4), seconds=0.1,
                   progress=False)
    t = traces.load(TRACE)
    res = disk.validate(t, prof, file=work_dir / "val.bin", rounds=2, tokens=12, progress=False, masking="dip",
                        keep=0.5, dram_fraction=0.5, warmup=2)
    assert res["measured_s_per_token"] > 0 and res["simulated_s_per_token"] > 0
    assert len(res["round_median_errors"]) == 2 and res["tokens"] == 10
    assert res["median_error"] >= 0


def test_bad_calibration_options(work_dir):
    with pytest.raises(DipsimError, match="multiples of 4 KiB"):
        disk.calibrate(work_dir / "x.bin", work_dir / "x.yaml", size=64 << 20, sizes=(1000,), progress=False)
    with pytest.raises(DipsimError, match="queue depth 1 and two request sizes"):
        disk.calibrate(work_dir / "x.bin", work_dir / "x.yaml", size=64 << 20, sizes=(4096,), progress=False)
    with pytest.raises(DipsimError, match="at least 64 MiB"):
        disk.calibrate(work_dir / "x.bin", work_dir / "x.yaml", size=1 << 20, progress=False)


def _pattern_file(path, n_bytes=1 << 20):
    data = np.arange(n_bytes // 4, dtype=np.uint32).tobytes()
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("backend", ["aio", "threads"])
def test_host_reads_every_request_and_stops_at_the_deadline(work_dir, backend):
    from simulator.disk import aio as _aio

    if backend == "aio" and _aio.available():
        pytest.skip(f"native AIO unavailable: {_aio.available()}")
    path = work_dir / f"host-{backend}.bin"
    _pattern_file(path)
    host = disk.Host(path, 64 << 10, depth=8, backend=backend)
    try:
        assert host.kind == backend
        offs = np.arange(0, 1 << 20, 4096)
        assert host.run(offs, np.full(len(offs), 4096), 8) == len(offs)
        assert host.run(offs[:3], np.full(3, 4096), 1) == 3
        assert host.run([], [], 4) == 0
        # a deadline already passed: only the first submissions (at most the queue depth) are read
        import time
        n = host.run(offs, np.full(len(offs), 4096), 4, until=time.perf_counter() - 1)
        assert n <= 4
        with pytest.raises((DipsimError, OSError)):   # past the end of the file: a short read is an error
            host.run([(1 << 20) - 4096], [8192], 1)
    finally:
        host.close()


@pytest.fixture
def aio_file(work_dir):
    """(the AIO module, an O_DIRECT descriptor of a 1 MiB pattern file, the file's bytes)."""
    from simulator.disk import aio as _aio

    if _aio.available():
        pytest.skip(f"native AIO unavailable: {_aio.available()}")
    path = work_dir / "aio-data.bin"
    data = _pattern_file(path)
    fd = disk.open_direct(path)
    yield _aio, fd, data
    os.close(fd)


def test_aio_reads_the_bytes_at_the_offsets_asked(aio_file):
    _aio, fd, data = aio_file
    with _aio.Context(4, fd, 64 << 10) as ctx:
        for off, size in [(0, 4096), (8192, 16384), ((1 << 20) - 4096, 4096)]:
            assert ctx.read_all([off], [size], 1) == 1
            assert bytes(ctx.bufs[0][:size]) == data[off:off + size]


def test_calibration_keeps_the_median_of_its_passes(work_dir):
    res = disk.calibrate(work_dir / "data.bin", work_dir / "p.yaml", size=64 << 20, sizes=(4096, 16384), depths=(1, 2),
                         seconds=0.05, passes=3, progress=False)
    assert [(p["size"], p["depth"]) for p in res["points"]] == [(4096, 1), (4096, 2), (16384, 1), (16384, 2)]
    assert all(p["spread"] >= 0 and p["seconds"] > 0.04 for p in res["points"])
    assert "3 passes" in (work_dir / "p.yaml").read_text()
    with pytest.raises(DipsimError, match="passes"):
        disk.calibrate(work_dir / "data.bin", work_dir / "p.yaml", size=64 << 20, passes=0, progress=False)


def test_aio_refuses_requests_larger_than_its_buffers_and_recovers_after_a_failed_read(aio_file):
    _aio, fd, data = aio_file
    with _aio.Context(4, fd, 8192) as ctx:
        with pytest.raises(OSError, match="exceeds the 8192-byte read buffers"):
            ctx.read_all([0], [16384], 1)
        # four reads in flight, the last past the end of the file: the error leaves none behind
        with pytest.raises(OSError, match="returned"):
            ctx.read_all([0, 4096, 8192, 1 << 20], [4096] * 4, 4)
        assert ctx._outstanding == 0
        assert ctx.read_all([4096], [4096], 1) == 1
        assert bytes(ctx.bufs[0][:4096]) == data[4096:8192]
