"""simulator.methods: SparseGPT and magnitude pruning into stored variants, LoRA trained with DIP masks,
look-ahead predictors and the ``predictor`` masking policy, and the split between the evaluation text
and the text these methods learn from. Exact cases on tiny random layers and a tiny random Llama;
the real model only in the slow tests, on 64 tokens."""
from __future__ import annotations

import math

import numpy as np
import pytest

from simulator import accuracy, masking, replay
from simulator.methods import data
from simulator.methods.magnitude import magnitude_prune
from simulator.methods.sparsegpt import sparsegpt_prune
from simulator.methods.variants import Variant, load_variant, matrix_bytes
from common.errors import DipsimError


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny(smollm2, tmp_path_factory):
    """A random 2-layer Llama (d_model 64, d_ff 128) with SmolLM2's tokenizer, as a LoadedModel."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from traces.models import ModelSource, wrap_model

    torch.manual_seed(0)
    tok = smollm2.tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=False, rms_norm_eps=1e-5, hidden_act="silu", bos_token_id=tok.bos_token_id)
    model = LlamaForCausalLM(cfg).eval()
    d = tmp_path_factory.mktemp("tiny-llama")
    weight = {"weight_dtype": "float32", "bytes_per_weight": 0.625, "static_bytes_per_weight": 4.0}
    return wrap_model(model, tok, ModelSource("tiny-llama", "hf", d), weight)


def state(lm):
    return {k: v.detach().clone() for k, v in lm.model.state_dict().items()}


def same_state(a, b):
    return a.keys() == b.keys() and all(torch_equal(a[k], b[k]) for k in a)


def torch_equal(a, b):
    import torch

    return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))


def logits(lm, ids):
    import torch

    with torch.inference_mode():
        return lm.model(input_ids=ids, use_cache=False).logits.clone()


def correlated_layer(rows=24, cols=80, n=1500, seed=0):
    """A random linear layer and calibration inputs with correlated, unequally scaled features."""
    import torch

    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g) / math.sqrt(cols) + 0.5 * torch.eye(cols)
    X = (mix @ torch.randn(cols, n, generator=g)) * (0.2 + 3 * torch.rand(cols, 1, generator=g))
    return torch.randn(rows, cols, generator=g), X


# ------------------------------------------------------------------------------------------- SparseGPT
@pytest.mark.parametrize("sparsity,blocksize", [(0.5, 16), (0.5, 128), (0.3, 7), (0.75, 32)])
def test_sparsegpt_beats_magnitude_and_prunes_exactly(sparsity, blocksize):
    W, X = correlated_layer()
    Ws, ps = sparsegpt_prune(W, X @ X.T, sparsity, blocksize=blocksize)
    Wm, pm = magnitude_prune(W, sparsity)
    n_zero = round(sparsity * W.numel())
    assert int(ps.sum()) == int(pm.sum()) == n_zero
    assert bool((Ws[ps] == 0).all()) and int((Ws == 0).sum()) == n_zero   # kept weights are nonzero here
    err = lambda V: float((W @ X - V @ X).norm())
    assert err(Ws) < 0.8 * err(Wm)
    # the OBS updates matter: the same mask without them is worse than with them
    assert err(Ws) < err(W.masked_fill(ps, 0.0))


def test_sparsegpt_with_identity_hessian_is_magnitude_pruning():
    """H = I: every OBS saliency is w^2 / const and no error propagates, so one block = magnitude."""
    import torch

    W, _ = correlated_layer()
    Ws, ps = sparsegpt_prune(W, torch.eye(W.shape[1]), 0.5, blocksize=W.shape[1])
    Wm, pm = magnitude_prune(W, 0.5)
    assert torch.equal(ps, pm) and torch.equal(Ws, Wm)


def test_sparsegpt_zero_sparsity_keeps_the_weights_and_dead_inputs_go_first():
    import torch

    W, X = correlated_layer(cols=32)
    X[5] = 0.0                                   # an input that never fires
    Ws, ps = sparsegpt_prune(W, X @ X.T, 0.0)
    assert int(ps.sum()) == 0 and torch.allclose(Ws[:, torch.arange(32) != 5], W[:, torch.arange(32) != 5])
    _, ps = sparsegpt_prune(W, X @ X.T, 0.1, blocksize=32)
    assert bool(ps[:, 5].all())                  # its weights carry nothing: pruned first


@pytest.mark.parametrize("bad", [{"sparsity": 1.0}, {"sparsity": -0.1}, {"sparsity": "half"}, {"blocksize": 0}])
def test_sparsegpt_refuses_bad_arguments(bad):
    import torch

    args = {"sparsity": 0.5, "blocksize": 8, **bad}
    with pytest.raises(DipsimError, match="sparsity|blocksize"):
        sparsegpt_prune(torch.ones(4, 8), torch.eye(8), args.pop("sparsity"), **args)


def test_stored_bytes_formula_by_hand():
    # 100 weights, 40 kept, 0.625 B each: values 25 B + bitmask ceil(100/8) = 13 B; 16-bit index: 40 * 2.625
    assert matrix_bytes(100, 40, 0.625) == {"dense": 62.5, "bitmask": 38.0, "index16": 105.0}
    import torch

    pruned = {"a": torch.tensor([[True, False, True, False]] * 4), "b": torch.zeros(2, 8, dtype=torch.bool)}
    v = Variant({k: torch.zeros(m.shape) for k, m in pruned.items()}, pruned, meta={"bytes_per_weight": 0.5})
    b = v.stored_bytes()
    assert b["bitmask"] == (8 * 0.5 + 2) + (16 * 0.5 + 2) and b["index16"] == 8 * 2.5 + 16 * 2.5
    assert b["dense"] == 32 * 0.5 and b["weights"] == 32 and v.sparsity() == 0.25


def test_variant_of_a_model_prunes_every_mlp_matrix_and_round_trips(tiny, tmp_path):
    from simulator.methods.prune import prune_model

    before = state(tiny)
    for method in ("sparsegpt", "magnitude"):
        v = prune_model(tiny, method, 0.5, n_seqs=4, seq_len=32, batch=2)
        assert same_state(before, state(tiny))                       # the model itself is left as it was
        assert sorted(v.weights) == sorted(f"layers.{i}.mlp.{p}" for i in range(2)
                                           for p in ("gate_proj", "up_proj", "down_proj"))
        for name, w in v.weights.items():
            assert int(v.pruned[name].sum()) == w.numel() // 2 and bool((w[v.pruned[name]] == 0).all())
        path = v.save(tmp_path / f"{method}.safetensors")
        back = load_variant(path)
        assert all(torch_equal(back.weights[k], v.weights[k]) for k in v.weights)
        assert back.meta["method"] == method and back.meta["bytes"]["bitmask_per_weight"] == pytest.approx(
            0.5 * 0.625 + 1 / 8)
        ids = data.training_sequences(tiny.tokenizer, 1, 16)
        dense = logits(tiny, ids)
        with back.apply(tiny):
            assert tiny.variant_tag.startswith(method)
            assert not torch_equal(logits(tiny, ids), dense)
        assert same_state(before, state(tiny)) and not hasattr(tiny, "variant_tag")


def test_results_on_swapped_weights_are_not_stored_as_the_base_models(tiny, tmp_path, monkeypatch):
    """evaluate() inside ``with variant.apply(lm)`` keys its stored results by the applied weights: the
    base model's stored figures are not read back for the pruned model, nor overwritten by it."""
    from simulator.methods.prune import prune_model

    monkeypatch.setenv("DIPSIM_CACHE_DIR", str(tmp_path / "cache"))
    cfg = {"masking": "dense"}
    base = accuracy.evaluate(tiny, cfg, tokens=24, warmup=2)[0]
    assert accuracy.evaluate(tiny, cfg, tokens=24, warmup=2)[0]["from_cache"]
    with prune_model(tiny, "magnitude", 0.5).apply(tiny):
        pruned = accuracy.evaluate(tiny, cfg, tokens=24, warmup=2)[0]
    assert not pruned["from_cache"] and pruned["dense_perplexity"] != base["dense_perplexity"]
    again = accuracy.evaluate(tiny, cfg, tokens=24, warmup=2)[0]
    assert again["from_cache"] and again["dense_perplexity"] == base["dense_perplexity"]


def test_an_unwritable_result_store_only_warns(tmp_path, monkeypatch, capsys):
    from simulator.accuracy import store

    key = {"k": 1}
    monkeypatch.setattr(store, "_key_path", lambda k: tmp_path / "taken")
    (tmp_path / "taken").mkdir()                     # a folder where the result file belongs
    store.write_cached(key, {"perplexity": 1.0})
    assert "could not cache an accuracy result" in capsys.readouterr().err


def test_sparsegpt_calibrates_sequentially_on_pruned_earlier_layers(tiny, monkeypatch):
    """Each Hessian must come from inputs that went through the already *pruned* matrices before it."""
    import torch

    from simulator.methods import prune

    real = prune.sparsegpt_prune

    def hessians(prune_for_real: bool) -> list:
        seen = []

        def spy(W, H, *a, **k):
            seen.append(H.clone())
            return real(W, H, *a, **k) if prune_for_real else (W.clone(), torch.zeros(W.shape, dtype=torch.bool))

        monkeypatch.setattr(prune, "sparsegpt_prune", spy)
        prune.prune_model(tiny, "sparsegpt", 0.5, n_seqs=2, seq_len=32, batch=2)
        return seen

    pruned, dense = hessians(True), hessians(False)      # per layer: gate, up (from x), then down (from h)
    assert torch.allclose(pruned[0], dense[0])                       # layer 0's x: nothing pruned before it
    assert not torch.allclose(pruned[2], dense[2], rtol=1e-3)        # layer 0's h: from the pruned gate/up
    assert not torch.allclose(pruned[3], dense[3], rtol=1e-3)        # layer 1's x: after the pruned layer 0


def test_unknown_pruning_method_is_refused(tiny):
    from simulator.methods.prune import prune_model

    with pytest.raises(DipsimError, match="allowed: sparsegpt, magnitude"):
        prune_model(tiny, "wanda")


# ------------------------------------------------------------------------------------------- text split
def test_learning_text_is_disjoint_from_the_evaluation_text(smollm2):
    from traces.capture import tokenize_prefix
    from traces.corpus import default_corpus

    corpus = default_corpus()
    start = data.check_disjoint(smollm2.tokenizer, corpus)       # the longest evaluation (4096 tokens)
    end = data.eval_end_char(smollm2.tokenizer, corpus, data.MAX_EVAL_TOKENS)
    assert end <= data.TRAIN_OFFSET <= start
    ev = smollm2.tokenizer.decode(tokenize_prefix(smollm2.tokenizer, corpus, 1024))
    assert corpus.text.startswith(ev) and len(ev) < start
    seqs = data.training_sequences(smollm2.tokenizer, 3, 64)      # SmolLM2's own convention: no prefix token
    assert seqs.shape == (3, 64) and (seqs[:, 0] != smollm2.tokenizer.bos_token_id).all()
    body = smollm2.tokenizer.decode(seqs[0].tolist())
    assert corpus.text[start:].startswith(body)                   # the first window lies after the offset
    with_bos = data.training_sequences(smollm2.tokenizer, 3, 64, prefix_token="bos")   # as evaluation would run
    assert (with_bos[:, 0] == smollm2.tokenizer.bos_token_id).all()
    assert with_bos[0, 1:].tolist() == seqs[0, :63].tolist()
    # positions apart is not content apart in a corpus that repeats itself; for 1024 tokens it is both
    assert data.shared_windows(smollm2.tokenizer, corpus, 1024) == 0.0
    with pytest.raises(DipsimError, match="offset 2000: the first 4096 evaluation tokens"):
        data.check_disjoint(smollm2.tokenizer, corpus, offset=2000)
    with pytest.raises(DipsimError, match="ask for fewer"):
        data.training_sequences(smollm2.tokenizer, 10_000, 512)


# ------------------------------------------------------------------------------------------- LoRA
def test_torch_dip_masks_match_the_simulators():
    import torch

    from simulator.kernels import topk_mask as np_topk
    from simulator.methods.torchmask import topk_mask

    a = torch.randn(7, 50, generator=torch.Generator().manual_seed(3))
    mask = topk_mask(a, 20).bool().numpy()
    assert np.array_equal(mask, np_topk(np.abs(a.numpy()), np.full(7, 20)))


def test_lora_with_zero_b_changes_nothing_and_restores_bit_for_bit(tiny):
    from simulator.methods.lora import LoRAHooks, init_adapter

    ids = data.training_sequences(tiny.tokenizer, 2, 16)
    before, dense = state(tiny), logits(tiny, ids)
    ad = init_adapter(tiny, rank=4, targets=("mlp", "attn"))
    with LoRAHooks(tiny, ad):
        assert torch_equal(logits(tiny, ids), dense)
    with ad.apply(tiny):
        assert torch_equal(logits(tiny, ids), dense)
    assert same_state(before, state(tiny))


def test_merged_adapter_equals_the_lora_path_on_masked_inputs(tiny):
    import torch

    from simulator.methods.lora import LoRAHooks, init_adapter
    from simulator.methods.torchmask import DIPMasks

    ids = data.training_sequences(tiny.tokenizer, 1, 24)
    ad = init_adapter(tiny, rank=4, seed=1)
    for name in ad.B:
        ad.B[name] = torch.randn(ad.B[name].shape, generator=torch.Generator().manual_seed(2)) * 0.05
    before = state(tiny)
    with DIPMasks(tiny, 0.5, 0.5):
        with LoRAHooks(tiny, ad):
            unmerged = logits(tiny, ids)
        with ad.apply(tiny):
            merged = logits(tiny, ids)
        plain = logits(tiny, ids)
    assert torch.allclose(merged, unmerged, atol=1e-4) and not torch.allclose(merged, plain, atol=1e-3)
    assert same_state(before, state(tiny))


def test_a_few_lora_steps_with_dip_masks_reduce_the_loss(tiny, tmp_path):
    from simulator.methods.lora import load_adapter, loss_curve, masked_loss, train_lora

    ids = data.training_sequences(tiny.tokenizer, 4, 32)
    before = state(tiny)
    ad = train_lora(tiny, rank=4, steps=10, batch=4, seq_len=32, lr=2e-2, warmup=1, loss="nll")
    assert same_state(before, state(tiny))
    assert masked_loss(tiny, ad, ids, loss="nll") < masked_loss(tiny, None, ids, loss="nll") - 0.02
    assert loss_curve(ad).shape == (10, 3) and ad.meta["steps_done"] == 10
    # the KL teacher (the dense model) runs too; on a random tiny model masking costs ~0.05 nats, too little
    # to show a reduction in a few steps (measured on SmolLM2 instead: benchmarks/methods.py)
    kl = train_lora(tiny, rank=4, steps=2, batch=2, seq_len=32, loss="kl", max_seconds=0.0)
    assert kl.meta["steps_done"] == 0 and kl.meta["stopped_early"]
    kl = train_lora(tiny, rank=4, steps=2, batch=2, seq_len=32, loss="kl")
    assert np.isfinite(loss_curve(kl)[:, 1]).all() and 0 < masked_loss(tiny, kl, ids, loss="kl") < 1
    back = load_adapter(ad.save(tmp_path / "ad.safetensors"))
    assert back.meta["rank"] == 4 and back.meta["masking"] == {"masking": "dip", "keep_up": 0.5, "keep_down": 0.5}
    assert all(torch_equal(back.A[k], ad.A[k]) and torch_equal(back.B[k], ad.B[k]) for k in ad.A)
    assert back.nbytes() == 2 * sum(4 * (64 + 128) for _ in range(6))


def test_lora_schedule_warms_up_then_decays_to_a_tenth():
    from simulator.methods.lora import _lr_at

    assert [_lr_at(s, 0.0, 1.0, 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert _lr_at(10, 0.0, 1.0, 4) == 1.0 and _lr_at(10, 0.5, 1.0, 4) == pytest.approx(0.55)
    assert _lr_at(10, 1.0, 1.0, 4) == pytest.approx(0.1) and _lr_at(10, 3.0, 1.0, 4) == pytest.approx(0.1)


@pytest.mark.parametrize("bad,match", [({"loss": "mse"}, "allowed: kl, nll"), ({"rank": 0}, "rank"),
                                       ({"steps": 0}, "steps"), ({"keep": 1.5}, "keep_up"),
                                       ({"autocast": "fp8"}, "autocast")])
def test_lora_refuses_bad_arguments(tiny, bad, match):
    from simulator.methods.lora import train_lora

    with pytest.raises(DipsimError, match=match):
        train_lora(tiny, **{"steps": 1, "batch": 1, "seq_len": 8, **bad})


# ------------------------------------------------------------------------------------------- predictor
def linked_trace(L=3, d=16, N=40, T=600, seed=0):
    """h[l] of each token is a fixed function of x[l-1] (layer 0: of x[0]) plus a little noise."""
    from traces.format import Trace

    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((L, T, d)).astype(np.float32)
    hs = np.empty((L, T, N), np.float32)
    for layer in range(L):
        M = rng.standard_normal((d, N)).astype(np.float32)
        hs[layer] = np.exp(0.7 * xs[max(layer - 1, 0)] @ M / 4) + 0.01 * rng.random((T, N))
    return Trace.from_arrays(xs, hs, {"model": "linked", "bytes_per_weight": 1.0})


def test_predictor_learns_a_look_ahead_relation(tmp_path):
    from simulator.methods.predictor import load_predictor, train_predictor

    t = linked_trace()
    pred = train_predictor(t, rank=16, keep=0.25, epochs=60, lr=3e-3, batch=64)
    held = pred.meta["held_out"]["down"]
    assert held["chance"] == 0.25 and held["mean_recall"] > 0.6           # well above chance
    assert all(r > 0.5 for r in held["recall"])
    assert 0.6 < held["mean_mass"] <= 1.0 and held["mean_set_fraction"] == 0.25   # top-k: exactly k columns
    from simulator.methods.predictor import evaluate_predictor, predict_sets

    loose = evaluate_predictor(pred, t, 420, 600, 0.25, threshold=0.1)["down"]     # a larger set: more recall
    assert loose["mean_set_fraction"] > 0.25 and loose["mean_recall"] > held["mean_recall"]
    with pytest.raises(DipsimError, match="threshold must be a probability"):
        predict_sets(pred, 1, "down", np.asarray(t.x(0)[:3]), 10, threshold=2.0)
    back = load_predictor(pred.save(tmp_path / "p.safetensors"))
    x = np.asarray(t.x(1)[:5], np.float32)
    assert np.array_equal(back.logits(2, "down", x), pred.logits(2, "down", x))


def test_predictor_policy_in_replay_and_the_oracle(tmp_path):
    from simulator.methods.predictor import train_predictor

    t = linked_trace(T=300)
    path = train_predictor(t, rank=8, keep=0.5, epochs=5, heads=("down", "upgate")).save(tmp_path / "p.safetensors")
    dip = replay(t, "dip", "lru", keep=0.5, warmup=0).totals()
    oracle = replay(t, "predictor", "lru", keep=0.5, warmup=0, oracle=True).totals()
    assert oracle == dip                                               # the oracle "predicts" the true top-k
    pol = masking.make("predictor", predictor_file=str(path))
    assert pol.score_source("h") == "prev_x" and pol.score_source("x") == "own"
    assert pol.available_at("h", 3) == (2, "mlp_input") and pol.available_at("x", 3) == (3, "mlp_input")
    assert pol.available_at("h", 0) == (0, "mlp_input")
    got = replay(t, pol, "lru", keep=0.5, warmup=0).totals()
    assert got["groups"]["upgate"] == dip["groups"]["upgate"] and got["groups"]["down"]["keep"] == 0.5
    thr = replay(t, "predictor", "lru", keep=0.5, warmup=0, predictor_file=str(path), upgate="predict", threshold=0.5)
    assert 0 < thr.totals()["groups"]["down"]["keep"] < 1


@pytest.mark.parametrize("params,match", [({}, "needs predictor_file"), ({"oracle": True, "threshold": 0.5}, "threshold"),
                                          ({"oracle": True, "upgate": "both"}, "upgate mode 'both'; allowed: dip, predict"),
                                          ({"predictor_file": "/nonexistent.safetensors"}, "not found"),
                                          ({"oracle": True, "threshold": 1.0, "upgate": "predict"}, r"in \(0, 1\)")])
def test_predictor_policy_refuses_bad_parameters(params, match):
    with pytest.raises(DipsimError, match=match):
        masking.make("predictor", **params)


# ------------------------------------------------------------------------------------------- in the loop
def test_configurations_name_variants_adapters_and_predictors_in_the_closed_loop(tiny, tmp_path):
    from simulator.methods.lora import init_adapter
    from simulator.methods.prune import prune_model

    var = prune_model(tiny, "magnitude", 0.5).save(tmp_path / "mag.safetensors")
    ad = init_adapter(tiny, rank=2)                                   # B = 0: the adapter changes nothing
    adp = ad.save(tmp_path / "ad.safetensors")
    before = state(tiny)
    cfgs = [{"masking": "dense"}, {"masking": "dense", "variant": str(var)}, {"masking": "dip", "keep": 0.5},
            {"masking": "dip", "keep": 0.5, "adapter": str(adp)},
            {"masking": "dip-ca", "gamma": 0.2, "keep": 0.5, "adapter": str(adp)},
            {"masking": "predictor", "oracle": True, "keep": 0.5}]
    rows = accuracy.evaluate(tiny, cfgs, tokens=24, warmup=2, reuse=False)
    assert same_state(before, state(tiny))
    assert rows[1]["perplexity"] != rows[0]["perplexity"] and rows[1]["kl_to_dense"] > 0   # KL to the base model
    assert rows[1]["label"].endswith("+magnitude0.5") and rows[1]["config"]["variant_id"]
    assert rows[3]["perplexity"] == pytest.approx(rows[2]["perplexity"], rel=1e-6)        # zero B
    assert rows[5]["perplexity"] == pytest.approx(rows[2]["perplexity"], rel=1e-6)        # oracle = dip
    with pytest.raises(DipsimError, match="layer-wise loop only"):
        accuracy.evaluate(tiny, cfgs[1], tokens=24, loop="token", reuse=False)
    with pytest.raises(DipsimError, match="a 'variant' file, expected a 'adapter' file"):
        accuracy.normalize_config({"masking": "dip", "adapter": str(var)})
    with pytest.raises(DipsimError, match="the file changed"):
        accuracy.normalize_config({"masking": "dip", "adapter": str(adp), "adapter_id": "0" * 16})


def test_closed_loop_predictor_sees_the_previous_layers_live_input(tiny, tmp_path):
    """In the loop the predictor's input is x[l-1] of the masked model itself, and replaying that
    closed trace with the same predictor gives the same masks."""
    from simulator.methods.predictor import train_predictor

    res = accuracy.evaluate(tiny, {"masking": "dense"}, tokens=64, reuse=False, details=True)[0]
    trace = res["details"]["dense_trace"]
    path = train_predictor(trace, rank=8, epochs=3, train_fraction=0.5).save(tmp_path / "p.safetensors")
    cfg = {"masking": "predictor", "predictor_file": str(path), "keep": 0.5, "cache": "none"}
    row = accuracy.evaluate(tiny, cfg, tokens=64, warmup=0, reuse=False, details=True)[0]
    closed = row["details"]["closed_trace"]
    again = replay(closed, "predictor", "none", keep=0.5, warmup=0, predictor_file=str(path))
    assert np.array_equal(again.groups["down"].selected, row["details"]["access_log"].groups["down"].selected)
    for t in (0, 20, 40):
        assert np.array_equal(again.groups["down"].missed_mask(t), row["details"]["masks"]["down"][t])


# ------------------------------------------------------------------------------------------- real model
@pytest.mark.slow
def test_sparsegpt_and_lora_run_on_smollm2(smollm2, tmp_path):
    from simulator.methods.lora import train_lora
    from simulator.methods.prune import prune_model

    v = prune_model(smollm2, "sparsegpt", 0.5, n_seqs=2, seq_len=64, batch=2)
    path = v.save(tmp_path / "sg.safetensors")
    assert abs(v.sparsity() - 0.5) < 1e-9 and v.stored_bytes()["bitmask_per_weight"] == pytest.approx(0.4375)
    ad = train_lora(smollm2, rank=2, steps=1, batch=1, seq_len=32).save(tmp_path / "ad.safetensors")
    rows = accuracy.evaluate(smollm2, [{"masking": "dense", "variant": str(path)},
                                       {"masking": "dip", "keep": 0.5, "adapter": str(ad)}], tokens=64, reuse=False)
    assert all(np.isfinite(r["perplexity"]) for r in rows) and rows[0]["kl_to_dense"] > 0


def test_methods_benchmark_threads_flag():
    """``benchmarks/methods.py --threads N`` sets torch's intra-op threads (it used to force 2, which
    overrode OMP_NUM_THREADS=1 on a shared machine); the default stays 2."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "methods.py"
    spec = importlib.util.spec_from_file_location("_methods_benchmark", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.parse_args([]).threads == 2
    assert mod.parse_args(["--threads", "1"]).threads == 1
    with pytest.raises(SystemExit):
        mod.parse_args(["--threads", "0"])
