"""traces.synth: statistics, the fitted model, streamed generation, leave-one-model-out validation, CLI."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import traces
from common.errors import DipsimError
from traces.format import Trace
from traces.synth import Fit, ModelStats, fit_traces, generate_trace, like, like_meta, presets, write_trace
from traces.synth import stats as S
from simulator import synth_validation as V
from traces.synth._kernel import MANTISSA, advance, to_f16
from traces.synth.copula import fold_corr, fold_z, unfold_acf
from traces.synth.generate import process_coefficients
from traces.synth.model import fit_ar_mixture

DATA = Path(__file__).parent / "data"
SMOL = DATA / "smol-6x48.safetensors"


# ------------------------------------------------------------------ statistics on hand-worked arrays
def test_overlap_run_lengths_membership_by_hand():
    m = np.array([[1, 1, 0, 0],
                  [0, 1, 1, 0],
                  [0, 1, 1, 0]], dtype=bool)
    # token 1 keeps {1} of {1, 2} from token 0 (1/2); token 2 keeps both (1): mean 3/4
    assert S.overlap(m, 1) == pytest.approx(0.75)
    # lag 2: token 2 {1, 2} vs token 0 {0, 1}: 1/2
    assert S.overlap(m, 2) == pytest.approx(0.5)
    assert np.isnan(S.overlap(m, 3))
    # column 0: one run of 1; column 1: a run of 3; column 2: a run of 2; column 3: none
    assert sorted(S.run_lengths(m).tolist()) == [1, 2, 3]
    assert S.run_lengths(np.array([[1], [1], [0], [1]], dtype=bool)).tolist() == [2, 1]
    np.testing.assert_allclose(S.membership(m), [1 / 3, 1, 2 / 3, 0])


def test_topk_masks_ties_to_lowest_index():
    a = np.array([[3.0, -1.0, 2.0], [0.0, 5.0, -5.0], [1.0, 1.0, 1.0]])
    m = S.topk_masks(a, 2 / 3)                  # k = 2, by magnitude
    assert m.tolist() == [[True, False, True], [False, True, True], [True, True, False]]
    assert S.topk_masks(np.array([[1.0, 1.0, 1.0]]), 0.1).tolist() == [[True, False, False]]   # k at least 1


def test_acf_of_alternating_and_constant_columns():
    T = 8
    alt = np.array([1.0, -1.0] * (T // 2))[:, None]
    ac = S.acf(alt, max_lag=3)
    np.testing.assert_allclose(ac, [1, -1, 1, -1], atol=1e-12)
    # a constant column is left out rather than counted as uncorrelated
    both = np.hstack([alt, np.ones((T, 1))])
    np.testing.assert_allclose(S.acf(both, max_lag=3), ac, atol=1e-12)
    # lags beyond the trace are 0, not extrapolated
    assert S.acf(alt, max_lag=10)[8:].tolist() == [0.0, 0.0, 0.0]


def test_gaussianize_gives_rank_normal_scores():
    a = np.array([[1.0, 4.0], [3.0, 3.0], [2.0, 2.0], [4.0, 1.0]])
    z = S.gaussianize(a)
    ns = S.normal_scores(4)
    np.testing.assert_allclose(z[:, 0], ns[[0, 2, 1, 3]])   # ranks of 1, 3, 2, 4
    np.testing.assert_allclose(z[:, 1], ns[::-1])
    assert ns[0] == pytest.approx(-ns[3]) and ns[1] == pytest.approx(-ns[2])


def test_marginal_stats_of_scaled_copies():
    # columns that are the same series scaled by e^0, e^1, e^2: same spread and shape, medians 1 apart
    base = np.exp(np.linspace(-2, 2, 101))
    a = np.stack([base * np.e ** c for c in (0, 1, 2)], axis=1)
    m = S.marginal_stats(a)
    assert m["mu"][len(S.Z_LEVELS) // 2] == pytest.approx(0.0, abs=1e-5)     # centred on the median column
    assert m["mu"][0] == pytest.approx(-1.0, abs=1e-5) and m["mu"][-1] == pytest.approx(1.0, abs=1e-5)
    # IQR of log|a| = 2 for each column (log a is linear from -2 to 2 over the tokens)
    np.testing.assert_allclose(np.exp(m["lsig_mean"]), 2.0, rtol=0.02)
    assert m["shape"][len(S.Z_LEVELS) // 2] == pytest.approx(0.0, abs=1e-5)
    assert np.isfinite(m["lsig_sd"]).all()          # 3 columns, 16 rank bins: no empty-bin NaN


# ------------------------------------------------------------------ the model's pieces
def test_ar_mixture_recovers_exact_parameters():
    lags = np.arange(1, S.MAX_LAG + 1)
    acf = 0.3 * 0.5 ** lags + 0.1 * 0.97 ** lags
    phi1, phi2, w1, w2 = fit_ar_mixture(acf)
    assert (phi1, phi2) == pytest.approx((0.5, 0.97))
    assert (w1, w2) == pytest.approx((0.3, 0.1), abs=1e-6)
    assert fit_ar_mixture(np.zeros(S.MAX_LAG))[2:] == (0.0, 0.0)      # no persistence: no weight


@given(phi1=st.floats(0.0, 0.95), w1=st.floats(0.0, 0.9), w2=st.floats(0.0, 0.09))
def test_arma_has_the_target_autocovariance(phi1, w1, w2):
    """The ARMA(1,1) the kernel runs has variance 1 - w2 and lag-1 autocovariance w1 phi1 (the sum
    of an AR(1) and white noise), so adding the slow part gives z the fitted autocorrelation."""
    coef, (a, b) = process_coefficients(phi1, 0.97, w1, w2)
    p, c, th = float(coef[0]), float(coef[1]), float(coef[2])
    g0 = c * c * (1 + 2 * p * th + th * th) / (1 - p * p)
    g1 = c * c * (1 + p * th) * (p + th) / (1 - p * p)
    assert g0 == pytest.approx(1 - w2, rel=1e-4, abs=1e-6)
    assert g1 == pytest.approx(w1 * phi1, rel=1e-4, abs=1e-5)
    assert abs(th) <= 1 + 1e-9
    assert a * a + b * b == pytest.approx(1 - w2, rel=1e-4)         # the start is stationary


@given(st.lists(st.floats(1e-9, 7e4, allow_nan=False), min_size=1, max_size=50))
def test_float16_bits_match_numpy(values):
    v = np.array(values, dtype=np.float32)
    out = np.empty(v.size, dtype=np.uint16)
    to_f16(v, out)
    with np.errstate(over="ignore"):
        ref = np.minimum(v.astype(np.float16).view(np.uint16), 0x7BFF)   # beyond float16: its largest value
    assert out.tolist() == ref.tolist()


def test_kernel_matches_a_numpy_reference_within_one_float16_step():
    """The compiled loop = the ARMA + slow AR recursion, the shape table indexed by sqrt|y| (the folded
    copula; linear beyond its ends), the clip and exp, written as float16 within one unit in the
    last place (its exp is a table)."""
    rng = np.random.default_rng(0)
    w, n = 40, 200
    noise = rng.standard_normal((w, 2, n), dtype=np.float32)
    state = rng.standard_normal((3, n)).astype(np.float32)
    mu = rng.normal(0, 4, n).astype(np.float32)          # reaches both clip limits
    sig = np.exp(rng.normal(0, 0.5, n)).astype(np.float32)
    knots = np.sort(rng.normal(0, 1, len(S.Z_LEVELS))).astype(np.float32)
    coef = np.array([0.4, 0.8, -0.2, 0.97, np.sqrt(1 - 0.97 ** 2), 0.3], dtype=np.float32)
    ref_state = state.astype(np.float64)
    out = np.empty((w, n), dtype=np.uint16)
    advance(noise, state, mu, sig, knots, 0.0, 0.2, coef, -16.0, 11.0, MANTISSA, out)
    ref = np.empty((w, n))
    for t in range(w):
        e = noise[t, 0]
        f = coef[0] * ref_state[0] + coef[1] * (e + coef[2] * ref_state[1])
        g = coef[3] * ref_state[2] + coef[4] * noise[t, 1]
        ref_state[:] = f, e, g
        pos = np.sqrt(np.abs(f + coef[5] * g)) / 0.2
        i = np.clip(np.floor(pos), 0, len(knots) - 2).astype(int)
        ref[t] = np.exp(np.clip(mu + sig * (knots[i] + (knots[i + 1] - knots[i]) * (pos - i)), -16, 11))
    np.testing.assert_allclose(state, ref_state, rtol=1e-4, atol=1e-5)
    with np.errstate(over="ignore"):
        want = np.minimum(ref.astype(np.float16).view(np.uint16), 0x7BFF).astype(int)
    assert np.abs(out.astype(int) - want).max() <= 1
    assert (out.astype(int) == want).mean() > 0.9


def test_folded_copula_correlation_matches_simulation():
    """z = Phi^-1(2 Phi(|y|) - 1) is standard normal; corr(z1, z2) = fold_corr(corr(y1, y2)), and
    unfold_acf inverts it."""
    rng = np.random.default_rng(0)
    y1 = rng.standard_normal(20000)
    z1 = fold_z(y1)
    assert abs(z1.mean()) < 0.03 and abs(z1.std() - 1) < 0.03
    for rho in (0.3, 0.8, 0.95):
        z2 = fold_z(rho * y1 + np.sqrt(1 - rho * rho) * rng.standard_normal(20000))
        assert np.corrcoef(z1, z2)[0, 1] == pytest.approx(fold_corr(rho), abs=0.02)
        assert unfold_acf(fold_corr(rho)) == pytest.approx(rho, abs=1e-3)
    assert fold_corr(0.0) == 0.0 and fold_corr(1.0) == 1.0
    assert unfold_acf(np.array([-0.1, 0.0])).tolist() == [0.0, 0.0]     # no negative persistence


def _known_fit(n_layers=2, phi=(0.5, 0.97), w=(0.3, 0.1)) -> Fit:
    """A fit whose every statistic is set by hand: columns spread 1.5 nats, Gaussian-copula shape = z."""
    lags = np.arange(1, S.MAX_LAG + 1)
    acf = w[0] * phi[0] ** lags + w[1] * phi[1] ** lags
    per = {"mu": 1.5 * S.Z_LEVELS, "lsig_mean": np.zeros(S.N_SIG_BINS), "lsig_sd": np.zeros(S.N_SIG_BINS),
           "shape": S.Z_LEVELS.astype(float), "acf": acf}
    groups = {k: {key: np.tile(v, (n_layers, 1)) for key, v in per.items()} for k in ("x", "h")}
    return Fit([ModelStats("known", n_layers, 64, 128, 1024, "", groups)])


def test_fit_recovers_known_parameters_from_generated_trace():
    fit = _known_fit()
    t = generate_trace(fit, 2, 256, 512, 2048, seed=1)
    got = fit_traces([t])
    for kind in ("x", "h"):
        g = got.models[0].groups[kind]
        want = fit.models[0].groups[kind]
        np.testing.assert_allclose(g["acf"][:, :16], want["acf"][:, :16], atol=0.02)
        np.testing.assert_allclose(g["mu"][:, 2:-2], want["mu"][:, 2:-2], atol=0.15)
        # IQR of log|a| = sig x (shape at the quartiles) = 1 x 2 x 0.674
        np.testing.assert_allclose(np.exp(g["lsig_mean"]), 2 * 0.6745, rtol=0.05)
        np.testing.assert_allclose(g["shape"][:, 2:-2], want["shape"][:, 2:-2] / (2 * 0.6745), atol=0.05)


def test_layer_params_average_models_at_relative_depth():
    a, b = _known_fit(3).models[0], _known_fit(5).models[0]
    a.groups["x"]["mu"] = np.tile(np.arange(3.0)[:, None], (1, len(S.Z_LEVELS)))     # 0, 1, 2 by depth
    b.groups["x"]["mu"] = np.tile(np.arange(5.0)[:, None], (1, len(S.Z_LEVELS))) * 0.5  # 0 .. 2 by depth
    b.model = "other"
    p = Fit([a, b]).layer_params(3)["x"]
    np.testing.assert_allclose(p.mu[:, 0], [0.0, 1.0, 2.0])
    p2 = Fit([a, b]).layer_params(2)["x"]                              # the two ends
    np.testing.assert_allclose(p2.mu[:, 0], [0.0, 2.0])


# ------------------------------------------------------------------ generation
def test_generation_is_deterministic_by_seed():
    fit = _known_fit()
    a = generate_trace(fit, 2, 32, 48, 20, seed=3)
    b = generate_trace(fit, 2, 32, 48, 20, seed=3, threads=1, window=5)
    c = generate_trace(fit, 2, 32, 48, 20, seed=4)
    for layer in range(2):
        assert np.array_equal(a.x(layer), b.x(layer)) and np.array_equal(a.h(layer), b.h(layer))
    assert not np.array_equal(a.x(0), c.x(0))
    # a shorter trace is the start of a longer one
    short = generate_trace(fit, 2, 32, 48, 7, seed=3)
    assert np.array_equal(short.h(1), a.h(1)[:7])


def test_streaming_equals_in_memory(tmp_path):
    fit = _known_fit()
    mem = generate_trace(fit, 2, 40, 72, 50, seed=9, meta={"model": "m"})
    path = write_trace(tmp_path / "s.safetensors", fit, 2, 40, 72, 50, seed=9, window=7,
                       meta={"model": "m", "architecture": "synthetic", "activation": "silu", "weight_dtype": "Q4_K",
                             "bytes_per_weight": 0.5625, "corpus_digest": ""})
    disk = traces.load(path)
    assert (disk.n_layers, disk.d_model, disk.d_ff, disk.n_tokens) == (2, 40, 72, 50)
    for layer in range(2):
        assert np.array_equal(np.asarray(disk.x(layer)), mem.x(layer))
        assert np.array_equal(np.asarray(disk.h(layer)), mem.h(layer))
    assert not list(tmp_path.glob(".*part*"))


@given(L=st.integers(1, 3), dm=st.integers(1, 40), dff=st.integers(1, 60), T=st.integers(1, 20),
       seed=st.integers(0, 2**31))
def test_generated_values_are_positive_finite_float16(L, dm, dff, T, seed):
    t = generate_trace(_known_fit(), L, dm, dff, T, seed=seed)
    assert (t.n_layers, t.d_model, t.d_ff, t.n_tokens) == (L, dm, dff, T)
    for layer in range(L):
        for arr in (t.x(layer), t.h(layer)):
            assert arr.dtype == np.float16 and np.isfinite(arr).all() and (arr >= 0).all()


def test_bad_dimensions_are_one_line_errors():
    with pytest.raises(DipsimError, match="tokens must be a positive integer"):
        generate_trace(_known_fit(), 2, 8, 8, 0)


# ------------------------------------------------------------------ presets and metadata
def test_presets_static_parameters_by_hand():
    llama = presets.get("llama3-8b")
    # q, o: 4096 x 4096; k, v: 4096 x 8 x 128; two norms; the final norm's share 4096 / 32
    assert llama.attn_params_per_layer == 2 * 4096 * 4096 + 2 * 4096 * 1024 + 2 * 4096 + 128
    m = llama.meta()
    assert m["embed_params"] == m["lm_head_params"] == 128256 * 4096 and m["tied_lm_head"] is False
    # the whole model: 8.03 B parameters
    total = 32 * (3 * 4096 * 14336 + m["attn_params_per_layer"]) + 2 * m["embed_params"]
    assert total == pytest.approx(8.03e9, rel=2e-3)
    phi = presets.get("phi3-medium").meta()
    assert (phi["n_layers"], phi["d_model"], phi["d_ff"], phi["n_kv_heads"], phi["vocab_size"]) == \
        (40, 5120, 17920, 10, 32064)
    assert phi["weight_dtype"] == "Q4_K" and phi["bytes_per_weight"] == 0.5625
    assert presets.weight_format_bytes("q4_1") == ("Q4_1", 0.625)
    assert presets.weight_format_bytes("0.7") == ("0.7B", 0.7)
    for bad in ("Q3", "0", "-1"):
        with pytest.raises(DipsimError, match="--weight-format"):
            presets.weight_format_bytes(bad)
    with pytest.raises(DipsimError, match="allowed: phi3-medium"):
        presets.get("gpt-5")


def test_like_writes_geometry_and_metadata(tmp_path):
    fit = _known_fit()
    fit.validation = {"hit_rate_abs_error_max": 0.02, "by_config": []}
    path = like("phi3-mini", 3, tmp_path / "p.safetensors", fit=fit, seed=5, weight_format="Q4_0")
    t = traces.load(path)
    assert (t.n_layers, t.d_model, t.d_ff, t.n_tokens) == (32, 3072, 8192, 3)
    assert t.meta["bytes_per_weight"] == 0.5625 and t.meta["weight_dtype"] == "Q4_0"
    assert t.meta["n_kv_heads"] == 32 and t.meta["head_dim"] == 96
    s = t.meta["synth"]
    assert s["fit"]["digest"] == fit.digest() and s["seed"] == 5 and s["preset"] == "phi3-mini"
    assert s["validation"]["hit_rate_abs_error_max"] == 0.02
    assert like_meta("phi3-mini", _known_fit())["synth"]["validation"] is None


# ------------------------------------------------------------------ fit files
def test_fit_json_round_trip_and_errors(tmp_path):
    fit = _known_fit()
    p = fit.save(tmp_path / "f.json")
    back = Fit.load(p)
    assert back.digest() == fit.digest() and back.names == ["known"]
    np.testing.assert_allclose(back.models[0].groups["h"]["acf"], fit.models[0].groups["h"]["acf"], atol=1e-4)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DipsimError, match="not a JSON file"):
        Fit.load(tmp_path / "bad.json")
    data = json.loads(p.read_text())
    data["models"][0]["groups"]["x"]["mu"] = [[1.0]]
    (tmp_path / "shape.json").write_text(json.dumps(data))
    with pytest.raises(DipsimError, match=r"x\.mu has shape \[1, 1\], expected \[2, 25\]"):
        Fit.load(tmp_path / "shape.json")
    with pytest.raises(DipsimError, match="not in the fit"):
        fit.without("nope")


def test_shipped_fit_loads_with_its_validation():
    fit = Fit.load()
    assert len(fit.models) >= 2
    v = fit.validation
    assert v is not None and v["method"] == "leave-one-model-out"
    assert set(v["held_out"]) == set(fit.names)
    assert v["hit_rate_abs_error_max"] == max(c["hit_rate_abs_error_max"] for c in v["by_config"])


# ------------------------------------------------------------------ validation on small real data
def _two_small_models(tmp_path) -> list[Trace]:
    """The committed 6-layer SmolLM2 trace and the same activations played backwards in time, as a
    second 'model' (leave-one-out needs two)."""
    t = traces.load(SMOL)
    xs = np.stack([np.asarray(t.x(layer))[::-1] for layer in range(t.n_layers)])
    hs = np.stack([np.asarray(t.h(layer))[::-1] for layer in range(t.n_layers)])
    meta = {k: v for k, v in t.meta.items() if k not in ("n_layers", "d_model", "n_tokens", "has_h")}
    meta["model"] = "smol-reversed"
    return [t, Trace.from_arrays(xs, hs, meta)]


def test_validate_on_small_real_data(tmp_path):
    real = _two_small_models(tmp_path)
    fit = fit_traces(real)
    result = V.validate(fit, {str(t.meta["model"]): t for t in real}, tokens=48, warmup=4)
    rows = result["rows"]
    assert len(rows) == 2 * len(V.POLICIES) * len(V.BUDGETS)
    for r in rows:
        assert 0 <= r["real"] <= 1 and 0 <= r["synth"] <= 1
        assert r["error"] == pytest.approx(r["synth"] - r["real"])
    s = result["summary"]
    assert s["hit_rate_abs_error_max"] == pytest.approx(max(abs(r["error"]) for r in rows))
    assert len(s["by_config"]) == 9 and s["held_out"] == [m for m in fit.names]
    # dip-ca with a smaller gamma hits more, on the synthetic traces as on the real ones
    for m in fit.names:
        for budget in V.BUDGETS:
            by = {r["policy"]: r for r in rows if r["model"] == m and r["dram_fraction"] == budget}
            assert by["dip"]["synth"] <= by["dip-ca g0.5"]["synth"] <= by["dip-ca g0.2"]["synth"]
    assert json.dumps(result)        # plain JSON (no NaN)


# ------------------------------------------------------------------ command line
def _cli(argv, capsys):
    from simulator.cli import main

    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_generate_and_errors(tmp_path, capsys):
    fit_path = _known_fit().save(tmp_path / "fit.json")
    out = tmp_path / "t.safetensors"
    rc, o, _ = _cli(["synth", "--like", "mistral-7b", "--tokens", "2", "--out", str(out), "--fit", str(fit_path),
                     "-q"], capsys)
    assert rc == 0 and "wrote" in o and "error is unknown" in o
    assert traces.load(out).meta["model"] == "synth:mistral-7b"
    for argv, what in ((["synth", "--like", "gpt-5", "--out", str(out)], "--like 'gpt-5'"),
                       (["synth", "--like", "phi3-mini"], "--out is required"),
                       (["synth", "--like", "phi3-mini", "--out", str(tmp_path)], "is a directory"),
                       (["synth", "--like", "phi3-mini", "--out", str(out), "--fit", str(tmp_path / "no.json")],
                        "file not found"),
                       (["synth", "--like", "phi3-mini", "--out", str(out), "--weight-format", "Q9"],
                        "--weight-format"),
                       (["synth", "validate", "--fit", str(fit_path), "--trace-dir", str(tmp_path)], "at least two")):
        rc, o, e = _cli(argv, capsys)
        assert rc == 2 and e.startswith("dipsim: error: ") and what in e and e.count("\n") == 1, (argv, e)


def test_cli_help_explains(capsys):
    rc, text, _ = _cli(["synth", "--help"], capsys)
    assert rc == 0
    assert "phi3-medium" in text and "validation" in text and "Q4_K" in text


def test_cli_fit_and_validate(tmp_path, capsys):
    real = _two_small_models(tmp_path)
    paths = [traces.save(tmp_path / f"{t.meta['model']}-48.safetensors", t) for t in real]
    fit_path = tmp_path / "fit.json"
    rc, o, _ = _cli(["synth", "fit", "--traces", *map(str, paths), "--out", str(fit_path), "--validate-tokens", "48",
                     "-q"], capsys)
    assert rc == 0 and fit_path.is_file() and "max |hit-rate error|" in o
    assert Fit.load(fit_path).validation["tokens"] == 48
    rc, o, _ = _cli(["synth", "validate", "--fit", str(fit_path), "--trace-dir", str(tmp_path), "--tokens", "48",
                     "--warmup", "4", "--format", "json", "-q"], capsys)
    assert rc == 0
    result = json.loads(o)
    assert {m["model"] for m in result["models"]} == {"smollm2-135m (first 6 layers)", "smol-reversed"}
    rc, o, e = _cli(["synth", "fit", "--traces", str(paths[0]), str(paths[0]), "--out", str(fit_path)], capsys)
    assert rc == 2 and "a second trace of model" in e


# ------------------------------------------------------------------ the real models (slow; needs their traces)
REAL_DIR = Path(os.environ.get("DIPSIM_REAL_TRACES", "traces-real"))


@pytest.mark.slow
def test_leave_one_model_out_on_real_traces():
    fit = Fit.load()
    real = {m.model: REAL_DIR / f"{m.model}-{m.n_tokens}.safetensors" for m in fit.models}
    missing = [str(p) for p in real.values() if not p.is_file()]
    if missing:
        pytest.skip(f"real traces not found (set DIPSIM_REAL_TRACES): {', '.join(missing)}")
    name = "gemma3-270m"          # the quickest to replay; the CLI runs all four
    result = V.validate(fit, {name: traces.load(real[name])}, tokens=512)
    assert result["summary"]["hit_rate_abs_error_max"] < 0.03


# ------------------------------------------------------------------ the error in sweeps
VALIDATION = {"hit_rate_abs_error_max": 0.03, "by_config": [
    {"masking": "dip", "gamma": None, "keep": 0.5, "cache": "lru", "dram_fraction": f, "hit_rate_abs_error_max": e}
    for f, e in ((0.25, 0.01), (0.5, 0.02), (0.75, 0.005))] + [
    {"masking": "dip-ca", "gamma": 0.2, "keep": 0.5, "cache": "lru", "dram_fraction": 0.5,
     "hit_rate_abs_error_max": 0.004}]}


def test_point_error_picks_the_validated_rows_around_the_budget():
    from simulator.synth_validation import point_error

    assert point_error(VALIDATION, "dip", None, 0.5, "lru", 0.5) == (0.02, "validated configuration")
    assert point_error(VALIDATION, "dip", None, 0.5, "lru", 0.6)[0] == 0.02        # max of 0.5 and 0.75
    assert point_error(VALIDATION, "dip", None, 0.5, "lru", 0.9)[0] == 0.005       # past the last: the nearest
    assert point_error(VALIDATION, "dip", None, 0.5, "lru", 0.1)[0] == 0.01
    assert point_error(VALIDATION, "dip-ca", 0.2, 0.5, "lru", 0.5)[0] == 0.004
    for other in (("dip-ca", 0.5, 0.5, "lru"), ("dip", None, 0.25, "lru"), ("dip", None, 0.5, "lfu")):
        err, why = point_error(VALIDATION, *other, 0.5)
        assert err == 0.03 and "not validated" in why
    assert point_error(None, "dip", None, 0.5, "lru", 0.5) == (None, "not validated")


def test_error_columns_bound_hit_rate_and_tokens_per_s():
    from simulator.synth_validation import error_columns

    cfg = {"masking": "dip", "keep": 0.5, "cache": "lru"}
    cols = error_columns(VALIDATION, cfg, 0.5, {"hit_rate": 0.6}, {"tokens_per_s": 10.0, "flash_ms_per_token": 40.0})
    assert cols["hit_rate_low"] == pytest.approx(0.58) and cols["hit_rate_high"] == pytest.approx(0.62)
    # misses 0.4 of the selected bytes; +-0.02 hit rate is +-5% flash: 100 ms +- 2 ms
    assert cols["tokens_per_s_low"] == pytest.approx(1000 / 102) and cols["tokens_per_s_high"] == pytest.approx(1000 / 98)
    # near 1 the hit rate cannot pass 1: at most every miss goes (100 ms, 40 of them flash -> 60 ms)
    cols = error_columns(VALIDATION, cfg, 0.5, {"hit_rate": 0.99}, {"tokens_per_s": 10.0, "flash_ms_per_token": 40.0})
    assert cols["hit_rate_high"] == 1.0 and cols["tokens_per_s_high"] == pytest.approx(1000 / 60)
    assert cols["tokens_per_s_low"] == pytest.approx(1000 / (100 + 2 * 40))      # 0.01 -> 0.03 misses: 3x


def test_a_sweep_over_a_synthetic_model_carries_its_error(tmp_path, monkeypatch):
    """trace: {model: synth:NAME} generates the trace once (cached); every row holds the fit's error."""
    import yaml

    from simulator import sweep

    monkeypatch.setenv("DIPSIM_CACHE_DIR", str(tmp_path / "cache"))
    exp = tmp_path / "e.yaml"
    exp.write_text(yaml.safe_dump({"name": "x", "trace": {"model": "synth:phi3-mini", "tokens": 6},
                                   "base": {"masking": "dip", "keep": 0.5, "cache": "lru", "warmup": 2,
                                            "device": "phone-12gb-ufs40"},
                                   "grid": {"dram_fraction": [0.5, 0.6]}}))
    out = tmp_path / "out"
    sweep.run_sweep(sweep.load_experiment(exp), out, jobs=1, progress=False, log=lambda s: None)
    df = sweep.load_results(out).sort_values("p.dram_fraction")
    shipped = Fit.load().validation
    assert (df["m.synth_hit_rate_error"] > 0).all() and (df["m.synth_hit_rate_error"] <= shipped["hit_rate_abs_error_max"]).all()
    assert (df["m.hit_rate_low"] <= df["m.hit_rate"]).all() and (df["m.hit_rate"] <= df["m.hit_rate_high"]).all()
    assert (df["m.tokens_per_s_low"] < df["m.tokens_per_s"]).all() and (df["m.tokens_per_s"] < df["m.tokens_per_s_high"]).all()
    assert df["m.synth_error_from"].tolist()[0] == "validated configuration"
    bad = tmp_path / "bad.yaml"
    bad.write_text(exp.read_text().replace("synth:phi3-mini", "synth:gpt-9"))
    with pytest.raises(DipsimError, match="unknown synthetic model 'gpt-9'; allowed: synth:phi3-medium"):
        sweep.load_experiment(bad)
