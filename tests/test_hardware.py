"""Hardware profiles and device models: cited figures, the flash model's formulas and invariants,
request building, the analytic model, validation messages, the listing."""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import hardware
from simulator.devices import (ComputeModel, DramModel, FlashModel, analytic_bandwidths, extents_to_requests,
                               page_round, sequential_mask, size_histogram, token_energy, token_time,
                               token_time_breakdown)
from simulator.hardware import load_device, load_part, parse_quantity
from common.errors import DipsimError

KiB, MiB = 1024, 1024 ** 2
PROFILES = hardware.profiles_dir()
FLASH = hardware.names("flash")
DEVICES = hardware.names("device")


# --------------------------------------------------------------------------- shipped profiles
def test_the_expected_profiles_ship():
    assert set(FLASH) >= {"emmc-5.1", "ufs-2.1", "ufs-3.1", "ufs-4.0", "nvme-gen3", "nvme-gen4", "nvme-gen5",
                          "apple-m2-ssd"}
    assert set(hardware.names("dram")) >= {"lpddr4x-4266", "lpddr5-6400", "lpddr5x-8533", "lpddr5x-9600",
                                           "ddr5-6400", "apple-m2-unified"}
    assert {"phone-npu", "laptop-gpu"} <= set(hardware.names("compute"))
    assert set(DEVICES) >= {"phone-8gb-ufs40", "phone-12gb-ufs40", "phone-old-ufs31", "laptop-ddr5-nvme4",
                            "apple-m2", "paper-a18"}


@pytest.mark.parametrize("name", FLASH)
def test_flash_profile_reproduces_its_cited_figures(name):
    spec = load_part("flash", name)
    raw = yaml.safe_load((PROFILES / "flash" / f"{name}.yaml").read_text())
    cited = raw.get("cited")
    assert cited, f"{name} cites no figures"
    expected = ("rand_4k_iops" in cited) + ("seq_read" in cited) + len(cited.get("also") or [])
    assert len(spec.cited) == expected >= 1
    m = spec.model()
    for fig in spec.cited:
        pred = fig.predicted(m)
        assert pred == pytest.approx(fig.value, rel=0.15), (name, fig.label, fig.block, fig.queue_depth, pred, fig.value)
    # the 4 KiB random figure at its cited queue depth, from the YAML's own keys
    if "rand_4k_iops" in cited:
        iops = parse_quantity(cited["rand_4k_iops"]["value"] if isinstance(cited["rand_4k_iops"], dict)
                              else cited["rand_4k_iops"], "number")
        qd = cited["rand_4k_qd"]["value"] if isinstance(cited["rand_4k_qd"], dict) else cited["rand_4k_qd"]
        assert m.iops(4096, qd) == pytest.approx(iops, rel=0.15)
    if "seq_read" in cited:
        get = lambda k: cited[k]["value"] if isinstance(cited[k], dict) else cited[k]  # noqa: E731
        bw = parse_quantity(get("seq_read"), "rate")
        blk = parse_quantity(get("seq_block"), "size")
        assert m.bandwidth(blk, get("seq_qd"), sequential=True) == pytest.approx(bw, rel=0.15)


@pytest.mark.parametrize("name", FLASH)
def test_flash_profile_throughput_stays_under_the_link(name):
    m = load_part("flash", name).model()
    sizes = [4 * KiB, 16 * KiB, 64 * KiB, 128 * KiB, 512 * KiB]
    for qd in (1, 4, 32, 1024):
        bws = [m.bandwidth(s, qd, sequential=True) for s in sizes]
        assert all(b <= m.link_bandwidth * (1 + 1e-12) for b in bws)
        assert all(b2 >= b1 * (1 - 1e-12) for b1, b2 in zip(bws, bws[1:]))   # bigger requests never slower


@pytest.mark.parametrize("kind", ["flash", "dram", "compute"])
def test_every_shipped_number_has_a_source_or_an_assumption(kind):
    for n in hardware.names(kind):
        spec = load_part(kind, n)
        raw = yaml.safe_load((PROFILES / hardware.schema.FOLDERS[kind] / f"{n}.yaml").read_text())
        assert spec.name == n
        for f in hardware.schema.NUMERIC_FIELDS[kind]:
            if f in raw:
                assert spec.provenance[f].startswith(("source:", "assumed:")), (n, f)


@pytest.mark.parametrize("name", DEVICES)
def test_every_device_loads(name):
    d = load_device(name)
    assert d.name == name
    assert d.dram_capacity > 0 and 0 < d.usable_dram_fraction <= 1
    assert 0 < d.usable_dram_bytes <= d.dram_capacity
    fm = d.flash_model()
    assert fm.batch_time([4096, 8192]) > 0
    assert d.dram_model().read_time(1 << 20) > 0
    dram_bw, flash_bw = analytic_bandwidths(d)
    assert dram_bw > flash_bw > 0
    if d.compute is not None:
        assert d.compute_model().time(1e9) > 0


def test_device_overrides_and_capacities():
    d = load_device("phone-8gb-ufs40")
    assert d.dram.bandwidth == pytest.approx(59.6e9)                      # PowerInfer-2's measurement
    assert load_part("dram", "lpddr5x-8533").bandwidth == pytest.approx(68.3e9)
    assert "override" in d.dram.provenance["bandwidth"]
    assert d.dram_capacity == 8 * 2 ** 30 and d.usable_dram_bytes == 4 * 2 ** 30
    assert d.flash.name == "ufs-4.0" and d.compute.name == "phone-npu"


# --------------------------------------------------------------------------- the paper's device
def test_paper_device_is_bytes_over_bandwidth():
    d = load_device("paper-a18")
    assert d.compute is None
    assert analytic_bandwidths(d) == (60e9, 1e9)
    fm = d.flash_model()
    rng = np.random.default_rng(7)
    sizes = rng.integers(1, 10_000_000, size=500)
    assert fm.batch_time(sizes) == pytest.approx(sizes.sum() / 1e9, rel=1e-12)
    assert fm.unloaded_latency(12345) == pytest.approx(12345 / 1e9, rel=1e-15)
    # no page rounding, no splitting: disjoint extents keep their bytes
    starts = np.array([0, 10, 100, 5000])
    ends = np.array([3, 20, 4000, 5001])
    r = fm.requests(starts, ends)
    assert r.sizes.sum() == (ends - starts).sum()
    assert d.dram_model().read_time(6e9) == pytest.approx(0.1, rel=1e-15)

    hit = np.array([[2e6, 1e6], [3e6, 0.0]])          # [L, G] bytes per masked layer
    miss = np.array([[1e5, 4e5], [0.0, 2e6]])
    want_max = np.maximum(miss / 1e9, hit / 60e9).sum() + 5e8 / 60e9 + 1e6 / 1e9
    want_sum = (miss / 1e9 + hit / 60e9).sum() + 5e8 / 60e9 + 1e6 / 1e9
    kw = dict(static_dram_bytes=5e8, streamed_static_bytes=1e6)
    assert token_time(d, hit, miss, **kw) == pytest.approx(want_max, rel=1e-12)
    assert token_time(d, hit, miss, concurrent=False, **kw) == pytest.approx(want_sum, rel=1e-12)
    # per token, summing only over the layer axes
    per_tok = token_time(d, np.stack([hit, 2 * hit]), np.stack([miss, 2 * miss]), layer_axes=(1, 2))
    assert per_tok.shape == (2,)
    assert per_tok[0] == pytest.approx(np.maximum(miss / 1e9, hit / 60e9).sum(), rel=1e-12)
    b = token_time_breakdown(dram_bandwidth=10.0, flash_bandwidth=1.0, hit_bytes=[10.0], miss_bytes=[3.0],
                             static_dram_bytes=20.0)
    assert (b["fixed"], b["dynamic"], b["total"]) == (2.0, 3.0, 5.0)
    assert token_energy(d, hit, miss) is None                          # the paper's parts carry no energy
    e = token_energy(load_device("phone-8gb-ufs40"), hit, miss)
    ph = load_device("phone-8gb-ufs40")
    assert e == pytest.approx(hit.sum() * ph.dram.read_energy_per_byte + miss.sum() * ph.flash.read_energy_per_byte)


# --------------------------------------------------------------------------- flash formulas, exact cases
def test_unloaded_latency_is_its_formula():
    m = FlashModel(latency=80e-6, unit_bandwidth=300e6, units=8, queue_depth=32, link_bandwidth=2e9,
                   page_bytes=4096, max_request_bytes=512 * KiB, random_penalty=10e-6)
    for s in (4096, 16 * KiB, 512 * KiB):
        base = 80e-6 + s / 300e6 + s / 2e9
        assert m.unloaded_latency(s, sequential=True) == pytest.approx(base, rel=1e-15)
        assert m.unloaded_latency(s) == pytest.approx(base + 10e-6, rel=1e-15)
        assert m.batch_time([s], sequential_mask=[True]) == pytest.approx(base, rel=1e-15)
        assert m.fine_time([s], sequential_mask=[True]) == pytest.approx(base, rel=1e-15)
    with pytest.raises(DipsimError, match="max_request_bytes"):
        m.unloaded_latency(1 * MiB)


def test_small_batches_by_hand():
    # latency 1 s, 1 byte/s units, 1 byte/s link, 1-byte requests: unit time 2, link time 1
    m = FlashModel(latency=1.0, unit_bandwidth=1.0, units=2, queue_depth=2, link_bandwidth=1.0)
    unit_done, link_done = m.schedule([1, 1, 1])
    assert unit_done.tolist() == [2.0, 2.0, 4.0]      # requests 0 and 2 share unit 0
    assert link_done.tolist() == [3.0, 4.0, 5.0]      # the link serves them one after another
    assert m.batch_time([1, 1, 1]) == 5.0 == m.fine_time([1, 1, 1])
    # queue depth 1: one request at a time on one unit, the link overlapping the next request
    assert m.batch_time([1, 1, 1], queue_depth=1) == 7.0 == m.fine_time([1, 1, 1], queue_depth=1)
    # the link is taken in order of unit completion, not issue order
    unit_done, link_done = m.schedule([3, 1])
    assert unit_done.tolist() == [4.0, 2.0] and link_done.tolist() == [7.0, 3.0]
    assert m.batch_time([]) == 0.0 == m.fine_time([])
    # steady state: P/u vs 1/x
    assert m.iops(1, 2) == pytest.approx(min(2 / 2.0, 1 / 1.0))
    assert m.iops(1, 1) == pytest.approx(0.5)
    assert m.bandwidth(4, 2) == pytest.approx(min(2 / 5, 1 / 4) * 4)


def test_degenerate_models_are_bytes_over_bandwidth():
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 100_000, size=300).astype(float)
    one_unit = FlashModel(latency=0.0, unit_bandwidth=2e8, units=1, queue_depth=1, link_bandwidth=math.inf)
    assert one_unit.batch_time(sizes) == pytest.approx(sizes.sum() / 2e8, rel=1e-12)
    link_only = FlashModel(latency=0.0, unit_bandwidth=math.inf, units=math.inf, queue_depth=math.inf,
                           link_bandwidth=1e9)
    assert link_only.batch_time(sizes) == pytest.approx(sizes.sum() / 1e9, rel=1e-12)
    # unbounded parallel units and an infinite link: every request on its own unit at once
    units_only = FlashModel(latency=0.0, unit_bandwidth=2e8, units=math.inf, queue_depth=math.inf,
                            link_bandwidth=math.inf)
    assert units_only.batch_time(sizes) == pytest.approx(sizes.max() / 2e8, rel=1e-12)
    assert units_only.iops(4096) == math.inf or units_only.iops(4096) > 1e12


def test_deep_sequential_stream_approaches_the_link():
    m = FlashModel(latency=60e-6, unit_bandwidth=400e6, units=32, queue_depth=64, link_bandwidth=4e9,
                   page_bytes=4096, max_request_bytes=512 * KiB)
    assert m.bandwidth(512 * KiB, 64, sequential=True) == pytest.approx(4e9, rel=1e-12)
    assert m.bandwidth(4 * KiB, 1) < 0.05 * 4e9
    sizes = np.full(2000, 512 * KiB)
    rate = sizes.sum() / m.batch_time(sizes)
    assert 0.97 * 4e9 < rate <= 4e9


# --------------------------------------------------------------------------- flash invariants (hypothesis)
@st.composite
def flash_models(draw):
    units = draw(st.one_of(st.integers(1, 8), st.just(math.inf)))
    qd = draw(st.one_of(st.integers(1, 16), st.just(math.inf)))
    latency = draw(st.floats(0.0, 2e-4))
    ub = draw(st.floats(1e7, 2e9))
    link = draw(st.one_of(st.floats(5e7, 1e10), st.just(math.inf)))
    pen = draw(st.sampled_from([0.0, 3e-5]))
    return FlashModel(latency=latency, unit_bandwidth=ub, units=units, queue_depth=qd, link_bandwidth=link,
                      page_bytes=4096, max_request_bytes=MiB, random_penalty=pen)


sizes_st = st.lists(st.integers(0, 256).map(lambda k: k * 4096), max_size=40)


@given(m=flash_models(), sizes=sizes_st, data=st.data())
@settings(max_examples=80, deadline=None)
def test_fine_and_batch_agree(m, sizes, data):
    mask = data.draw(st.lists(st.booleans(), min_size=len(sizes), max_size=len(sizes)))
    qd = data.draw(st.one_of(st.none(), st.integers(1, 20)))
    b = m.batch_time(sizes, mask, queue_depth=qd)
    f = m.fine_time(sizes, mask, queue_depth=qd)
    assert f == pytest.approx(b, rel=0.02)          # the contract
    assert f == pytest.approx(b, rel=1e-9, abs=1e-15)  # in practice: rounding only


@given(m=flash_models(), sizes=sizes_st.filter(bool), data=st.data())
@settings(max_examples=80, deadline=None)
def test_batch_time_is_monotone_in_bytes(m, sizes, data):
    i = data.draw(st.integers(0, len(sizes) - 1))
    grown = list(sizes)
    grown[i] = min(grown[i] + 4096 * data.draw(st.integers(1, 64)), MiB)
    t0, t1 = m.batch_time(sizes), m.batch_time(grown)
    assert t1 >= t0 * (1 - 1e-12)
    # one more request never makes the batch faster either
    assert m.batch_time(sizes + [4096]) >= t0 * (1 - 1e-12)


@given(m=flash_models(), sizes=sizes_st.filter(lambda s: sum(s) > 0))
@settings(max_examples=60, deadline=None)
def test_batch_throughput_never_exceeds_the_link(m, sizes):
    t = m.batch_time(sizes)
    assert sum(sizes) / t <= m.link_bandwidth * (1 + 1e-9)
    assert t >= m.unloaded_latency(max(sizes), sequential=True) * (1 - 1e-12)
    s = max(sizes)
    if s:
        assert m.bandwidth(s, 16) <= m.link_bandwidth * (1 + 1e-12)


# --------------------------------------------------------------------------- requests from extents
def test_page_round():
    assert page_round(0, 1, 4096) == (0, 4096)
    assert page_round(4096, 8192, 4096) == (4096, 8192)
    assert page_round(5000, 5001, 4096) == (4096, 8192)
    assert page_round(4095, 4097, 4096) == (0, 8192)
    a, b = page_round(np.array([0, 100, 8192]), np.array([0, 4096, 8193]), 4096)
    assert a.tolist() == [0, 0, 8192] and b.tolist() == [0, 4096, 12288]
    assert page_round(3, 7, 1) == (3, 7)


def test_coalescing_exact_cases():
    P = 4096
    # adjacent 2 KiB columns merge into one request, widened to whole pages
    r = extents_to_requests([0, 2048, 4096], [2048, 4096, 6144], page_bytes=P, max_request_bytes=MiB)
    assert r.offsets.tolist() == [0] and r.sizes.tolist() == [8192]
    # a gap of a whole page keeps them apart
    r = extents_to_requests([0, 8192], [4096, 12288], page_bytes=P, max_request_bytes=MiB)
    assert r.offsets.tolist() == [0, 8192] and r.sizes.tolist() == [4096, 4096]
    # a small gap inside touching pages merges after alignment
    r = extents_to_requests([0, 4000], [100, 4100], page_bytes=P, max_request_bytes=MiB)
    assert r.offsets.tolist() == [0] and r.sizes.tolist() == [8192]
    # two extents in one page: one page read
    r = extents_to_requests([10, 200], [20, 300], page_bytes=P, max_request_bytes=MiB)
    assert r.sizes.tolist() == [4096]
    # overlapping and unsorted extents
    r = extents_to_requests([8192, 0, 100], [12288, 5000, 6000], page_bytes=P, max_request_bytes=MiB)
    assert r.offsets.tolist() == [0] and r.sizes.tolist() == [12288]
    # a run of 10 pages with at most 4 pages per request: 4 + 4 + 2
    r = extents_to_requests([0], [10 * P], page_bytes=P, max_request_bytes=4 * P)
    assert r.offsets.tolist() == [0, 4 * P, 8 * P] and r.sizes.tolist() == [4 * P, 4 * P, 2 * P]
    # many adjacent columns: merged, then split at the maximum
    starts = np.arange(0, 64) * 3000
    r = extents_to_requests(starts, starts + 3000, page_bytes=P, max_request_bytes=16 * KiB)
    assert r.sizes.sum() == 192000 + (-192000 % P) and r.sizes.max() == 16 * KiB
    assert np.all(r.offsets % P == 0) and np.all(np.diff(r.offsets) == r.sizes[:-1])
    # empty extents are dropped; no extents -> no requests
    r = extents_to_requests([5, 7], [5, 7], page_bytes=P)
    assert r.sizes.size == 0 and r.offsets.size == 0
    with pytest.raises(DipsimError):
        extents_to_requests([10], [5], page_bytes=P)


def test_sequential_mask_and_histogram():
    assert sequential_mask([0, 4096, 16384, 20480], [4096, 4096, 4096, 4096]).tolist() == [False, True, False, True]
    assert sequential_mask([100], [4], previous_end=100).tolist() == [True]
    h = size_histogram([4096, 4096, 4097, 8192, 1, 3, 0, MiB])
    assert h == {0: 1, 1: 1, 4: 1, 4096: 2, 8192: 2, MiB: 1}
    assert size_histogram([]) == {}


# --------------------------------------------------------------------------- DRAM and compute
def test_dram_and_compute_models():
    d = DramModel(bandwidth=50e9, latency=100e-9, efficiency=0.8, read_energy_per_byte=30e-12)
    assert d.read_time(0) == 0.0
    assert d.read_time(4e9) == pytest.approx(100e-9 + 4e9 / 40e9, rel=1e-15)
    assert d.read_time(np.array([0, 1e6])).tolist() == pytest.approx([0.0, 100e-9 + 1e6 / 40e9])
    assert d.energy(1e9) == pytest.approx(0.03)
    c = ComputeModel(fp16_flops=10e12, int8_ops=40e12, efficiency=0.5)
    assert c.time(5e12) == pytest.approx(1.0) and c.time(20e12, "int8") == pytest.approx(1.0)
    with pytest.raises(DipsimError, match="allowed"):
        c.time(1, "fp8")
    with pytest.raises(DipsimError, match="int8"):
        ComputeModel(fp16_flops=1e12).time(1, "int8")
    assert load_part("compute", "apple-m2-gpu").fp16_flops == pytest.approx(3.6e12)


# --------------------------------------------------------------------------- units
@pytest.mark.parametrize("text, kind, value", [
    ("4 KiB", "size", 4096), ("512 KiB", "size", 524288), ("12 GB", "size", 12e9), ("8 GiB", "size", 8 * 2 ** 30),
    (4096, "size", 4096), ("4200 MB/s", "rate", 4.2e9), ("60 GB/s", "rate", 60e9), ("6 GiB/s", "rate", 6 * 2 ** 30),
    ("23.2 Gb/s", "rate", 2.9e9), (1e9, "rate", 1e9), ("80 us", "time", 80e-6), ("80 µs", "time", 80e-6),
    ("1.5 ms", "time", 1.5e-3), (0.001, "time", 1e-3), ("0.42 nJ/B", "energy", 0.42e-9), ("4 pJ/bit", "energy", 32e-12),
    ("3.6 TFLOP/s", "flops", 3.6e12), ("45 TOPS", "flops", 45e12), ("1_200_000", "number", 1.2e6),
])
def test_units_parse(text, kind, value):
    assert parse_quantity(text, kind) == pytest.approx(value, rel=1e-12)


# --------------------------------------------------------------------------- validation messages
GOOD_FLASH = {
    "name": "t", "source": "test values",
    "latency": "50 us", "unit_bandwidth": "300 MB/s", "units": 8, "queue_depth": 32, "link_bandwidth": "2 GB/s",
    "page_bytes": "4 KiB", "max_request_bytes": "512 KiB",
}


def _write(tmp_path: Path, rel: str, data) -> Path:
    p = tmp_path / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return p


def _error(fn, *args) -> str:
    with pytest.raises(DipsimError) as e:
        fn(*args)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def test_good_part_by_path_and_default_fields(tmp_path):
    p = _write(tmp_path, "flash/t.yaml", GOOD_FLASH)
    s = load_part("flash", p)
    assert (s.latency, s.units, s.page_bytes, s.random_penalty) == (50e-6, 8, 4096, 0.0)
    assert s.cited == () and s.read_energy_per_byte is None
    # a copy of a shipped file loads by path too
    q = tmp_path / "copy.yaml"
    shutil.copy(PROFILES / "flash" / "ufs-4.0.yaml", q)
    assert load_part("flash", str(q)) == dataclasses.replace(load_part("flash", "ufs-4.0"), path=str(q))


@pytest.mark.parametrize("change, field, words", [
    ({"link_bandwidth": None}, "link_bandwidth", ["missing", "required fields"]),
    ({"latencyy": "5 us"}, "latencyy", ["unknown field", "allowed:", "latency", "unit_bandwidth"]),
    ({"units": -4}, "units", ["> 0", "-4"]),
    ({"unit_bandwidth": 0}, "unit_bandwidth", ["> 0"]),
    ({"latency": "80 MB/s"}, "latency", ["expected a time", "80 MB/s", "allowed units", "us"]),
    ({"page_bytes": "4 us"}, "page_bytes", ["expected a size", "KiB"]),
    ({"units": 2.5}, "units", ["whole number"]),
    ({"queue_depth": True}, "queue_depth", ["expected"]),
    ({"latency": "fast"}, "latency", ["expected a time"]),
    ({"latency": "5 parsecs"}, "latency", ["unknown unit"]),
    ({"units": "unbounded", "latency": "unbounded"}, "latency", ["finite"]),
    ({"max_request_bytes": "6 KiB"}, "max_request_bytes", ["multiple of page_bytes"]),
    ({"max_request_bytes": "1 KiB"}, "max_request_bytes", [">= page_bytes"]),
    ({"latency": {"value": "5 us"}}, "latency", ["source", "assumed"]),
    ({"latency": {"value": "5 us", "sourse": "x"}}, "latency.sourse", ["allowed: value, source, assumed"]),
    ({"cited": {"rand_4k_iops": 1000}}, "cited.source", ["missing"]),
    ({"cited": {"source": "x", "rand_4k_iops": 1000}}, "cited.rand_4k_qd", ["go together"]),
    ({"cited": {"source": "x", "seq_read": "5 us", "seq_block": "4 KiB", "seq_qd": 1}}, "cited.seq_read",
     ["expected a rate"]),
])
def test_flash_validation_errors(tmp_path, change, field, words):
    data = {**GOOD_FLASH, **change}
    data = {k: v for k, v in data.items() if v is not None}
    p = _write(tmp_path, "flash/bad.yaml", data)
    msg = _error(load_part, "flash", p)
    assert "bad.yaml" in msg and f"'{field}'" in msg, msg
    for w in words:
        assert w in msg, (w, msg)


def test_no_source_anywhere_is_an_error(tmp_path):
    data = {k: v for k, v in GOOD_FLASH.items() if k != "source"}
    msg = _error(load_part, "flash", _write(tmp_path, "flash/nosrc.yaml", data))
    assert "nosrc.yaml" in msg and "'latency'" in msg and "no source" in msg


def test_dram_and_compute_validation(tmp_path):
    p = _write(tmp_path, "dram/d.yaml", {"source": "s", "bandwidth": "60 GB/s", "latency": "100 ns",
                                         "efficiency": 1.5})
    msg = _error(load_part, "dram", p)
    assert "d.yaml" in msg and "'efficiency'" in msg and "(0, 1]" in msg
    p = _write(tmp_path, "compute/c.yaml", {"source": "s", "fp16_flops": "10 GB/s"})
    msg = _error(load_part, "compute", p)
    assert "c.yaml" in msg and "'fp16_flops'" in msg and "TFLOP/s" in msg


def test_broken_yaml_and_wrong_top_level(tmp_path):
    msg = _error(load_part, "flash", _write(tmp_path, "flash/broken.yaml", "latency: [1, 2\nunits: 3\n"))
    assert "broken.yaml" in msg and "not valid YAML" in msg
    msg = _error(load_part, "flash", _write(tmp_path, "flash/list.yaml", "- 1\n- 2\n"))
    assert "list.yaml" in msg and "mapping" in msg
    msg = _error(load_part, "flash", tmp_path / "missing.yaml")
    assert "missing.yaml" in msg and "no such file" in msg


def test_unknown_names_list_the_valid_ones(tmp_path):
    msg = _error(load_part, "flash", "ufs-9.9")
    assert "ufs-9.9" in msg and "ufs-4.0" in msg and "nvme-gen4" in msg
    msg = _error(load_device, "phone-1tb")
    assert "phone-1tb" in msg and "paper-a18" in msg
    msg = _error(load_part, "ssd", "ufs-4.0")
    assert "allowed: flash, dram, compute" in msg


def test_device_validation_errors(tmp_path):
    good = {"name": "dev", "source": "test", "flash": "ufs-4.0", "dram": "lpddr5x-8533", "dram_capacity": "8 GiB"}
    d = load_device(_write(tmp_path, "devices/dev.yaml", good))
    assert d.compute is None and d.usable_dram_fraction == 1.0 and d.dram_capacity == 8 * 2 ** 30

    msg = _error(load_device, _write(tmp_path, "devices/d1.yaml", {**good, "flash": "ufs-9.9"}))
    assert "d1.yaml" in msg and "'flash'" in msg and "ufs-9.9" in msg and "ufs-4.0" in msg
    msg = _error(load_device, _write(tmp_path, "devices/d2.yaml", {k: v for k, v in good.items()
                                                                   if k != "dram_capacity"}))
    assert "d2.yaml" in msg and "'dram_capacity'" in msg and "missing" in msg
    msg = _error(load_device, _write(tmp_path, "devices/d3.yaml", {**good, "ram": "lpddr5x-8533"}))
    assert "d3.yaml" in msg and "'ram'" in msg and "allowed:" in msg and "dram_capacity" in msg
    msg = _error(load_device, _write(tmp_path, "devices/d4.yaml", {**good, "dram_capacity": "8 GB/s"}))
    assert "d4.yaml" in msg and "'dram_capacity'" in msg and "expected a size" in msg
    msg = _error(load_device, _write(tmp_path, "devices/d5.yaml",
                                     {**good, "overrides": {"flash": {"latencyy": "1 us"}}}))
    assert "d5.yaml" in msg and "'overrides.flash.latencyy'" in msg and "allowed:" in msg
    msg = _error(load_device, _write(tmp_path, "devices/d6.yaml",
                                     {**good, "overrides": {"dram": {"bandwidth": "-3 GB/s"}}}))
    assert "d6.yaml" in msg and "'overrides.dram.bandwidth'" in msg and "> 0" in msg
    msg = _error(load_device, _write(tmp_path, "devices/d7.yaml",
                                     {**good, "flash": {**{k: v for k, v in GOOD_FLASH.items() if k != "source"},
                                                        "units": 0}}))
    assert "d7.yaml" in msg and "'flash.units'" in msg and "> 0" in msg
    msg = _error(load_device, _write(tmp_path, "devices/d8.yaml", {**good, "usable_dram_fraction": 0}))
    assert "d8.yaml" in msg and "'usable_dram_fraction'" in msg and "(0, 1]" in msg
    # a part referenced by a path relative to the device file
    _write(tmp_path, "devices/parts/my-flash.yaml", {**GOOD_FLASH, "kind": "flash"})
    d = load_device(_write(tmp_path, "devices/d9.yaml", {**good, "flash": "parts/my-flash.yaml"}))
    assert d.flash.name == "t" and d.flash.latency == 50e-6


def test_a_part_file_is_not_a_device(tmp_path):
    msg = _error(load_device, str(PROFILES / "flash" / "ufs-4.0.yaml"))
    assert "ufs-4.0.yaml" in msg and "'kind'" in msg and "flash part, not a device" in msg and "paper-a18" in msg
    p = _write(tmp_path, "elsewhere/part.yaml", GOOD_FLASH)             # no folder or kind hint: told by its keys
    msg = _error(load_device, p)
    assert "part.yaml" in msg and "not a device" in msg
    msg = _error(load_part, "flash", str(PROFILES / "devices" / "apple-m2.yaml"))
    assert "apple-m2.yaml" in msg and "a device, not a flash part" in msg
    msg = _error(load_part, "dram", str(PROFILES / "flash" / "emmc-5.1.yaml"))
    assert "emmc-5.1.yaml" in msg and "not a dram part" in msg


# --------------------------------------------------------------------------- listing and CLI pieces
def test_listing_and_cli(capsys):
    rows = hardware.list_profiles()
    by = {(r["kind"], r["name"]) for r in rows}
    for k in hardware.KINDS:
        for n in hardware.names(k):
            assert (k, n) in by
    ufs = next(r for r in rows if r["name"] == "ufs-4.0")
    assert ufs["cited_rand_4k_iops"] == pytest.approx(ufs["rand_4k_iops"], rel=0.15)
    assert ufs["cited_seq_read_mb_per_s"] == pytest.approx(ufs["seq_read_mb_per_s"], rel=0.15)
    assert all(" " not in k and "/" not in k for r in rows for k in r)   # JSON keys without spaces or units
    text = hardware.profiles_table()
    assert "ufs-4.0" in text and "paper-a18" in text and "lpddr5x-9600" in text and "phone-npu" in text

    from simulator import cli

    assert cli.main(["profiles", "--kind", "flash"]) == 0
    out = capsys.readouterr().out
    assert "nvme-gen5" in out and "lpddr5x" not in out
    assert cli.main(["profiles", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert any(r["name"] == "paper-a18" for r in data)
    assert cli.main(["profiles", "nvme-gen3"]) == 0
    out = capsys.readouterr().out
    assert "19,000 IOPS" in out and "assumed:" in out
    assert cli.main(["profiles", "ufs-4.0"]) == 0
    assert "source: UFS has a single command queue" in capsys.readouterr().out
    with pytest.raises(DipsimError, match="allowed"):
        hardware.describe_profile("no-such-part")


def test_a_part_name_is_not_a_device():
    msg = _error(load_device, "ufs-4.0")
    assert "'ufs-4.0' is a flash part, not a device" in msg and "phone-8gb-ufs40" in msg
