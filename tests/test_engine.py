"""The engine: layout and requests, the batch flash kernel, agreement with the analytic model and
with the per-request (fine) simulation, and its outputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import simulator
import traces
from simulator import engine
from simulator.devices.flash import FlashModel
from simulator.devices.flash import extents_to_requests
from simulator.layout import Layout
from common.errors import DipsimError

from expected_replay import TRACE

DEVICE = """
name: test-phone
source: test values
flash:
  name: test-flash
  source: test values
  latency: {latency}
  unit_bandwidth: {unit_bw}
  units: {units}
  queue_depth: {qd}
  link_bandwidth: {link_bw}
  page_bytes: {page}
  max_request_bytes: {max_req}
dram:
  name: test-dram
  source: test values
  bandwidth: 60 GB/s
  latency: {dram_lat}
{compute}
dram_capacity: 12 GiB
"""
COMPUTE = """compute:
  name: test-npu
  source: test values
  fp16_flops: 4 TFLOP/s"""


def device(tmp_path, name="dev.yaml", *, latency="60 us", unit_bw="300 MB/s", units=16, qd=32, link_bw="4200 MB/s",
           page="4 KiB", max_req="512 KiB", dram_lat="100 ns", compute=True):
    p = tmp_path / name
    p.write_text(DEVICE.format(latency=latency, unit_bw=unit_bw, units=units, qd=qd, link_bw=link_bw, page=page,
                               max_req=max_req, dram_lat=dram_lat, compute=COMPUTE if compute else "compute: null"))
    return p


@pytest.fixture(scope="module")
def small():
    return traces.load(TRACE)


@pytest.fixture(scope="module")
def log(small):
    return simulator.replay(small, "dip-ca", "lru", keep=0.5, dram_fraction=0.5, gamma=0.3, warmup=4)


def test_requests_never_span_layers_and_follow_the_page_rules():
    layer = np.array([0, 0, 0, 0, 0, 1])
    start = np.array([0, 1000, 2000, 5000, 9000, 20000])
    r = extents_to_requests(start, start + 1000, page_bytes=4096, max_request_bytes=8192, segments=layer)
    assert r.segments.tolist() == [0, 0, 1]
    assert r.offsets.tolist() == [0, 8192, 16384] and r.sizes.tolist() == [8192, 4096, 8192]
    r = extents_to_requests(start, start + 1000, page_bytes=1024, max_request_bytes=2048, segments=layer)
    assert r.offsets.tolist() == [0, 2048, 4096, 8192, 19456] and r.sizes.tolist() == [2048, 1024, 2048, 2048, 2048]
    r = extents_to_requests([0, 100], [100, 200], page_bytes=1, max_request_bytes=10**9, segments=[0, 1])
    assert r.sizes.tolist() == [100, 100]  # touching, but in two layers: two requests


def test_layout_places_every_column_once(log):
    lay = Layout(log)
    seen = []
    for name, g in log.groups.items():
        full = np.ones((log.n_layers, g.n_columns), dtype=bool)
        layer, start, end = lay.extents(name, full)
        assert np.all(end - start == int(np.ceil(g.bytes_per_column)))
        seen.append(np.stack([start, end], 1))
    ext = np.concatenate(seen)
    ext = ext[np.argsort(ext[:, 0])]
    assert ext[0, 0] == 0 and ext[-1, 1] == lay.total_bytes
    assert np.all(ext[1:, 0] == ext[:-1, 1])          # no gaps, no overlaps


@pytest.mark.parametrize("reorder", ["frequency", "coactivation"])
def test_reordering_clusters_columns_that_miss_together(small, reorder):
    # static masking without a cache: the same scattered quarter of the columns misses every token
    log = simulator.replay(small, "static", "none", keep=0.25, warmup=0, calib_tokens=16)
    lay = Layout(log, reorder=reorder, calib_tokens=16)
    for name, r in lay.regions.items():
        assert all(sorted(row) == list(range(r.n_columns)) for row in r.slot.tolist())
    plain = Layout(log)

    def n_requests(layout):
        return sum(len(layout.requests(g, log.groups[g].missed_mask(t), 4096, 1 << 19).sizes)
                   for g in log.groups for t in range(20, 30))

    assert n_requests(lay) < n_requests(plain) / 3


@given(sizes=st.lists(st.integers(1, 1 << 20), min_size=1, max_size=60), units=st.integers(1, 40),
       qd=st.integers(1, 64), seq_bits=st.integers(0, 2**60), penalty=st.sampled_from([0.0, 20e-6]),
       host=st.sampled_from([0.0, 8e-6, 60e-6]))
@settings(max_examples=150)
def test_stage_kernel_equals_flash_model(sizes, units, qd, seq_bits, penalty, host):
    fm = FlashModel(latency=50e-6, unit_bandwidth=250e6, units=units, queue_depth=qd, link_bandwidth=4e9,
                    random_penalty=penalty, host_overhead=host)
    s = np.array(sizes, dtype=float)
    seq = np.array([(seq_bits >> i) & 1 for i in range(len(s))], dtype=bool)
    stage = np.zeros(len(s), dtype=np.int64)
    from simulator.engine.flash_stages import stage_times

    got = stage_times(stage, s, seq, 1, fm.latency, fm.random_penalty, fm.unit_bandwidth,
                              fm.link_bandwidth, int(fm.parallelism()), fm.host_overhead, qd)[0]
    assert got == pytest.approx(fm.batch_time(s, seq), rel=1e-12)
    assert got == pytest.approx(fm.fine_time(s, seq), rel=0.02)


def test_host_overhead_serialises_submission_and_queue_depth_one_is_serial():
    fm = FlashModel(latency=40e-6, unit_bandwidth=1e9, units=8, queue_depth=1, link_bandwidth=1e12, host_overhead=10e-6)
    s = np.full(5, 4096.0)
    u = 40e-6 + 4096 / 1e9
    assert fm.batch_time(s) == pytest.approx(5 * (10e-6 + u) + 4096 / 1e12)  # one outstanding: serial (link overlaps)
    assert fm.iops(4096) == pytest.approx(1 / (10e-6 + u))
    deep = FlashModel(latency=40e-6, unit_bandwidth=1e9, units=8, queue_depth=32, link_bandwidth=1e12,
                      host_overhead=10e-6)
    assert deep.iops(4096) == pytest.approx(1e5)                                  # host-bound: 1 / h
    n = 400
    assert n / deep.batch_time(np.full(n, 4096.0)) == pytest.approx(1e5, rel=0.02)


def test_engine_equals_analytic_model_without_latency_queueing_or_compute(tmp_path, log):
    dev = device(tmp_path, latency="0 us", unit_bw="unbounded", units="unbounded", qd="unbounded",
                 link_bw="1 GB/s", page="1 B", max_req="unbounded", dram_lat="0 ns", compute=False)
    res = engine.simulate(log, dev, miss_via_dram=False, overlap_io=True)
    s = res.summary()
    assert s["tokens_per_s"] == pytest.approx(s["analytic_tokens_per_s"], rel=1e-9)


def test_fine_and_batch_modes_agree(tmp_path, small):
    log = simulator.replay(small, "dip", "lru", keep=0.5, dram_fraction=0.5, tokens=12, warmup=2)
    dev = device(tmp_path, units=4, qd=4)
    b = engine.simulate(log, dev).summary()
    f = engine.simulate(log, dev, mode="fine").summary()
    assert f["tokens_per_s"] == pytest.approx(b["tokens_per_s"], rel=0.02)
    assert f["engine_events"] > b["engine_events"]


@pytest.mark.parametrize("masking, overlap_io", [("dip", True), ("static", True), ("dense", False)])
def test_batch_closed_form_equals_the_event_simulation(tmp_path, small, masking, overlap_io):
    """Plain batch mode sums each token's layers directly; with a timeline requested it runs event by
    event in SimPy. Both give the same latencies (read-ahead batches included for static masking)."""
    log = simulator.replay(small, masking, "lru", keep=0.5, dram_fraction=0.5, tokens=16, warmup=2)
    dev = device(tmp_path)
    direct = engine.simulate(log, dev, overlap_io=overlap_io)
    events = engine.simulate(log, dev, overlap_io=overlap_io, chrome_trace=tmp_path / "t.json", chrome_tokens=1)
    np.testing.assert_allclose(direct.latency, events.latency, rtol=1e-12, atol=0)


def test_time_is_monotone_in_bytes_and_overlap_helps(tmp_path, small):
    dev = device(tmp_path)
    fast = []
    for frac in (0.9, 0.5, 0.1):  # less cache -> more flash bytes -> slower
        log = simulator.replay(small, "dip", "lru", keep=0.5, dram_fraction=frac, warmup=4)
        fast.append(engine.simulate(log, dev).summary()["tokens_per_s"])
    assert fast[0] > fast[1] > fast[2]
    log = simulator.replay(small, "dip", "lru", keep=0.5, dram_fraction=0.5, warmup=4)
    a = engine.simulate(log, dev, overlap_io=True).summary()["tokens_per_s"]
    b = engine.simulate(log, dev, overlap_io=False).summary()["tokens_per_s"]
    assert a > b


def test_summary_fields_and_chrome_trace(tmp_path, log):
    out = tmp_path / "trace.json"
    res = engine.simulate(log, device(tmp_path), chrome_trace=out, chrome_tokens=2)
    s = res.summary()
    for k in ("tokens_per_s", "latency_ms_p50", "latency_ms_p99", "flash_requests_per_token", "mean_request_bytes",
              "analytic_tokens_per_s", "speedup_vs_dense_stream", "memory_saved_fraction", "stall_ms_per_token"):
        assert np.isfinite(s[k]), k
    assert s["latency_ms_p99"] >= s["latency_ms_p50"] > 0
    # page rounding: what is read is at least what missed
    tot = log.totals()
    assert s["flash_read_bytes_per_token"] >= tot["flash_bytes_per_token"]
    assert 0 < s["memory_saved_fraction"] < 1
    events = json.loads(out.read_text())["traceEvents"]
    assert {e["args"]["token"] for e in events} == {0, 1}
    assert {e["tid"] for e in events} >= {"flash", "dram+compute"}


def test_bad_engine_options(tmp_path, log):
    with pytest.raises(DipsimError, match="engine: mode: unknown engine mode 'exact'; allowed: batch, fine"):
        engine.simulate(log, device(tmp_path), mode="exact")
    with pytest.raises(DipsimError, match="layout: reorder: unknown reordering 'random'; allowed: none"):
        engine.simulate(log, device(tmp_path), layout={"reorder": "random"})


@st.composite
def random_logs(draw):
    """An access log with random misses: one up/gate group or separate up and gate, then down,
    with column sizes that straddle pages, and optionally a random slot permutation per layer."""
    from simulator.replay import AccessLog, GroupLog

    T, L = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    split = draw(st.booleans())
    names = ["up", "gate", "down"] if split else ["upgate", "down"]
    groups = {}
    for name in names:
        N = draw(st.integers(1, 40))
        bpc = draw(st.sampled_from([1.0, 96.5, 1152.0, 3000.25, 9000.0]))
        p = draw(st.sampled_from([0.0, 0.1, 0.5, 0.95, 1.0]))
        seed = draw(st.integers(0, 2**16))
        miss = np.random.default_rng(seed).random((T, L, N)) < p
        z = np.zeros((T, L), np.int32)
        groups[name] = GroupLog(name, N, bpc, np.zeros(L), np.full(L, N), z, z, np.packbits(miss, axis=2))
    return AccessLog({}, {}, 0, groups), draw(st.integers(0, 2**16))


@settings(max_examples=150, deadline=None)
@given(case=random_logs(), page=st.sampled_from([1, 512, 4096, 16384]),
       max_req=st.sampled_from([float("inf"), 16384.0, 131072.0]), permute=st.booleans())
def test_compiled_requests_equal_the_reference_extents(case, page, max_req, permute):
    """The engine's one-pass request builder gives exactly the requests of the readable path
    (Layout.block_extents, then extents_to_requests), page rules, merges and cuts included."""
    from simulator.engine.flash_stages import stage_groups
    from simulator.engine.stage_requests import block_requests
    from simulator.layout import Region

    log, seed = case
    max_req = max(max_req, float(page))
    lay = Layout(log)
    if permute:
        rng = np.random.default_rng(seed)
        for name, r in lay.regions.items():
            slot = np.stack([rng.permutation(r.n_columns) for _ in range(log.n_layers)])
            lay.regions[name] = Region(r.group, r.n_columns, r.bytes_per_column, r.base, slot)
    stages = stage_groups(log)
    L = log.n_layers
    segs, starts, ends = [], [], []
    for s_i, names in enumerate(stages):
        for g in names:
            missed = np.unpackbits(log.groups[g].missed_bits, axis=2, count=log.groups[g].n_columns).view(bool)
            tok, layer, a, b = lay.block_extents(g, missed)
            segs.append((tok * L + layer) * 2 + s_i)
            starts.append(a)
            ends.append(b)
    ref = extents_to_requests(np.concatenate(starts), np.concatenate(ends), page_bytes=page,
                              max_request_bytes=max_req, segments=np.concatenate(segs))
    got = block_requests(log, lay, stages, 0, log.n_tokens, page_bytes=page, max_request_bytes=max_req)
    assert got.segments.tolist() == ref.segments.tolist()
    assert got.offsets.tolist() == ref.offsets.tolist()
    assert got.sizes.tolist() == ref.sizes.tolist()


def test_device_budget_by_hand(tmp_path):
    """usable DRAM - static weights - KV cache at the context length - runtime reserve, worked by hand."""
    from simulator.engine.budget import device_budget

    meta = {"n_layers": 2, "d_model": 4, "d_ff": 8, "attn_params_per_layer": 100, "embed_params": 1000,
            "lm_head_params": 1000, "tied_lm_head": True, "static_bytes_per_weight": 2.0, "bytes_per_weight": 0.5,
            "n_heads": 2, "n_kv_heads": 1, "head_dim": 2, "vocab_size": 250, "context": 10}
    dev = device(tmp_path).read_text().replace("dram_capacity: 12 GiB",
                                               "dram_capacity: 1 MiB\nusable_dram_fraction: 0.5\nruntime_reserve: 4 KiB")
    (tmp_path / "d.yaml").write_text(dev)
    b = device_budget(tmp_path / "d.yaml", meta)
    # usable 524288; static 2 layers x 100 x 2 B + tied embedding 1000 x 2 B = 2400;
    # KV 2 (k, v) x 1 head x 2 dims x 2 B x 10 positions x 2 layers = 160; reserve 4096
    assert (b.usable_bytes, b.static_weight_bytes, b.kv_cache_bytes, b.runtime_reserve) == (524288, 2400, 160, 4096)
    assert b.cache_bytes == 524288 - 2400 - 160 - 4096
    meta["tied_lm_head"] = False          # an untied head adds its own 2000 B
    assert device_budget(tmp_path / "d.yaml", meta).cache_bytes == 524288 - 4400 - 160 - 4096
    tiny = dev.replace("dram_capacity: 1 MiB", "dram_capacity: 8 KiB")
    (tmp_path / "tiny.yaml").write_text(tiny)
    assert device_budget(tmp_path / "tiny.yaml", meta).cache_bytes == 0      # nothing left: every column streams


@pytest.mark.parametrize("masking", ["dip", "dip-ca", "dense"])
def test_paper_a18_is_the_papers_formula(log, small, masking):
    """The paper-a18 profile stands for the paper's bytes/bandwidth model, and says so: its missed
    columns do not pass through DRAM (miss_via_dram: false in the profile), so the engine's
    tokens/s equals the analytic model's on every access log. Set explicitly, the run's choice wins."""
    lg = simulator.replay(small, masking, "lru", keep=0.5, dram_fraction=0.5, warmup=4)
    s = engine.simulate(lg, "paper-a18").summary()
    assert s["tokens_per_s"] == pytest.approx(s["analytic_tokens_per_s"], rel=1e-12)
    t = engine.simulate(lg, "paper-a18", miss_via_dram=True).summary()
    if masking != "dense" or t["flash_read_bytes_per_token"] > 0:
        assert t["tokens_per_s"] < s["tokens_per_s"]


def test_lookahead_timeline_by_hand():
    """Two layers, the second layer's down reads known a layer early (look-ahead): worked by hand.
    Attention 1 s, up/gate reads 2 s, down reads 3 s, hits 0.5 s, landed 0 s, overlap on.
    Without look-ahead: layer 0 up 1..3, down 3..6; layer 1 attention to 7, up 7..9, down 9..12.
    With it: the job (3 s) is issued at 1 but yields to layer 0's demand reads (1..3, 3..6); it runs
    6..7, yields to layer 1's up/gate reads (7..9), and finishes 9..11; layer 1 ends at 11."""
    from simulator.engine.lookahead import lookahead_timeline

    f = np.array([[[2.0, 3.0], [2.0, 3.0]]])
    h = np.full((1, 2, 2), 0.5)
    m = np.zeros((1, 2, 2))
    none = np.zeros((2, 2), dtype=bool)
    down1 = none.copy()
    down1[1, 1] = True
    lat, _, end = lookahead_timeline(np.array([1.0]), f, h, m, none, True, 0.0)
    assert lat.tolist() == [12.0] and end[0, 0].tolist() == [3.0, 6.0]
    lat, done, end = lookahead_timeline(np.array([1.0]), f, h, m, down1, True, 0.0)
    assert lat.tolist() == [11.0] and done[0, 1].tolist() == [9.0, 11.0] and end[0, 1].tolist() == [9.0, 11.0]


@st.composite
def timelines(draw):
    T, L = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    times = st.floats(0, 5, allow_nan=False, allow_infinity=False)
    arr = lambda *shape: np.array(draw(st.lists(times, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))).reshape(shape)  # noqa: E731
    early = np.array(draw(st.lists(st.booleans(), min_size=2 * L, max_size=2 * L))).reshape(L, 2)
    early[0] = False                  # nothing is known before the first layer
    return arr(T), arr(T, L, 2), arr(T, L, 2), arr(T, L, 2), early, draw(st.booleans()), draw(times)


@settings(max_examples=300, deadline=None)
@given(case=timelines())
def test_lookahead_never_slows_a_token(case):
    """Look-ahead reads yield to the reads a layer waits for, so any set of look-ahead stages gives
    every token a latency no higher than reading on demand; with none it is batch mode's sum."""
    from simulator.engine.lookahead import lookahead_timeline

    t_attn, f, h, m, early, overlap, head = case
    base, _, _ = lookahead_timeline(t_attn, f, h, m, np.zeros_like(early), overlap, head)
    first = np.maximum(f, h) if overlap else f + h
    np.testing.assert_allclose(base, (t_attn[:, None] + (first + m).sum(axis=2)).sum(axis=1) + head, rtol=1e-12)
    ahead, _, _ = lookahead_timeline(t_attn, f, h, m, early, overlap, head)
    assert (ahead <= base + 1e-9).all()


def test_oracle_predictor_prefetch_on_the_engine(small, tmp_path):
    """The oracle predictor picks DIP's masks, known a layer early: with prefetch off its tokens/s
    equals DIP's exactly (same access log, same reads), with prefetch on it is at least as fast, and
    a timeline shows the look-ahead reads."""
    dev = device(tmp_path)
    dip = simulator.replay(small, "dip", "lru", keep=0.5, dram_fraction=0.5, warmup=4)
    ora = simulator.replay(small, "predictor", "lru", keep=0.5, dram_fraction=0.5, warmup=4, oracle=True,
                           upgate="predict")
    assert all((ora.groups[g].missed_bits == dip.groups[g].missed_bits).all() for g in dip.groups)
    base = engine.simulate(dip, dev).summary()["tokens_per_s"]
    off = engine.simulate(ora, dev, prefetch=False).summary()["tokens_per_s"]
    on = engine.simulate(ora, dev, chrome_trace=tmp_path / "t.json", chrome_tokens=1).summary()
    assert off == base and on["tokens_per_s"] > base
    names = {e["name"] for e in json.loads((tmp_path / "t.json").read_text())["traceEvents"]}
    assert "flash L1 down (look-ahead)" in names and "flash L0 down" in names
    with pytest.raises(DipsimError, match="fine does not model reads issued a layer ahead"):
        engine.simulate(ora, dev, mode="fine")


def test_replay_json_says_how_the_cache_budget_was_decided(capsys):
    """replay --format json carries the budget and its source, as sweep rows do: the device's own
    budget when a device is named and no budget is given, half the MLP without a device."""
    import json as _json

    from simulator import cli
    from expected_replay import TRACE

    base = ["replay", "--trace", str(TRACE), "-q", "--format", "json"]
    assert cli.main(base) == 0
    plain = _json.loads(capsys.readouterr().out)
    assert plain["cache_budget_from"] == "default" and plain["cache_budget_bytes"] == round(0.5 * plain["mlp_bytes"])
    assert cli.main(base + ["--device", "phone-8gb-ufs40"]) == 0
    dev = _json.loads(capsys.readouterr().out)
    assert dev["cache_budget_from"] == "device" and dev["cache_budget_bytes"] != plain["cache_budget_bytes"]
