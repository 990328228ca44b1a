"""Closed-loop accuracy (simulator.accuracy) on the real SmolLM2 model: masking and cache policies
run inside the forward pass, and their results are checked against independent computations and
between the layer-wise loop (the default) and the token-by-token reference loop."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import simulator
from simulator import accuracy, cli
from simulator.accuracy.configs import normalize_config
from simulator.cli import eval as cli_eval
from common.errors import DipsimError

TOKENS = 48
DENSE = {"masking": "dense", "cache": "lru", "dram_fraction": 0.5}
DIP_FULL = {"masking": "dip", "keep": 1.0}
DIP = {"masking": "dip", "keep": 0.5}
CA_ONE = {"masking": "dip-ca", "gamma": 1.0, "keep": 0.5}
CA = {"masking": "dip-ca", "gamma": 0.2, "keep": 0.5}
DENSE_FULL = {"masking": "dense", "dram_fraction": 1.0}
STATIC = {"masking": "static", "keep": 0.5}
RANDOM = {"masking": "random", "keep": 0.5, "cache": "s3fifo", "seed": 3}
CONFIGS = [DENSE, DIP_FULL, DIP, CA_ONE, CA, DENSE_FULL, STATIC, RANDOM]


@pytest.fixture(scope="module")
def batch(smollm2):
    """All CONFIGS in one closed-loop run (layer-wise), with per-token details."""
    res = accuracy.evaluate(smollm2, CONFIGS, tokens=TOKENS, reuse=False, details=True)
    return {json.dumps(c, sort_keys=True): r for c, r in zip(CONFIGS, res)}


@pytest.fixture(scope="module")
def token_batch(smollm2):
    """The same configurations through the token-by-token loop (batched rows, row-by-row linears)."""
    res = accuracy.evaluate(smollm2, CONFIGS, tokens=TOKENS, reuse=False, details=True, loop="token")
    return {json.dumps(c, sort_keys=True): r for c, r in zip(CONFIGS, res)}


def get(batch, cfg):
    return batch[json.dumps(cfg, sort_keys=True)]


def text_ids(lm, n, prefix_token="auto"):
    """The sequence evaluation runs: the prefix token (by default the model's own convention), then
    the first ``n`` text tokens."""
    from traces import prefix
    from traces.capture import tokenize_prefix
    from traces.corpus import default_corpus

    return prefix.sequence(prefix.resolve(prefix_token, lm), tokenize_prefix(lm.tokenizer, default_corpus(), n))


def model_token_losses(lm, ids):
    """Per-position next-token losses of the dense model, from its own loss (one parallel forward)."""
    import torch

    with torch.inference_mode():
        out = lm.model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids]))
        logits = out.logits[0, :-1].double()
        per_token = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")
    return float(out.loss), per_token.numpy()


# ------------------------------------------------------------------------------------------- (a)
def test_dense_perplexity_is_the_models_loss_perplexity(smollm2, batch):
    ids = text_ids(smollm2, TOKENS)
    loss, _ = model_token_losses(smollm2, ids)
    r = get(batch, DENSE)
    assert r["details"]["tokens"] == ids and r["scored_tokens"] == len(ids) - 1 == TOKENS - 1   # no prefix token
    assert r["perplexity"] == pytest.approx(math.exp(loss), rel=5e-3)
    assert r["dense_perplexity"] == r["perplexity"]
    assert r["kl_to_dense"] == 0.0 and r["top1_agreement"] == 1.0


@pytest.mark.parametrize("prefix_token", ["auto", "bos"])
def test_prefill_tokens_are_left_out_of_the_metrics(smollm2, prefix_token):
    """The prompt is the prefix token (if any) and the prefill text tokens: the same 24 text tokens
    are scored, and masked, whatever the convention."""
    ids = text_ids(smollm2, 32, prefix_token)
    _, per_token = model_token_losses(smollm2, ids)        # per_token[j]: the prediction of ids[j + 1]
    r = accuracy.evaluate(smollm2, DENSE, tokens=32, prefill=8, warmup=2, reuse=False, prefix_token=prefix_token)[0]
    assert r["scored_tokens"] == 32 - 8 and r["measured_tokens"] == 32 - 8 - 2
    assert r["perplexity"] == pytest.approx(math.exp(per_token[-24:].mean()), rel=5e-3)
    assert r["perplexity"] != pytest.approx(math.exp(per_token.mean()), rel=5e-3)


# ------------------------------------------------------------------------------------------- (b)
def test_dip_keeping_every_column_is_the_dense_model(batch):
    dense, full = get(batch, DENSE), get(batch, DIP_FULL)
    assert full["row"] != dense["row"]                      # it really ran its own masked forward
    np.testing.assert_array_equal(full["details"]["logits"], dense["details"]["logits"])
    assert full["perplexity"] == dense["perplexity"]
    assert full["kl_to_dense"] == 0.0 and full["top1_agreement"] == 1.0
    assert full["keep_actual"] == {"upgate": 1.0, "down": 1.0}


def test_pruning_changes_the_output(batch):
    dense, dip = get(batch, DENSE), get(batch, DIP)
    assert dip["keep_actual"] == {"upgate": 0.5, "down": 0.5}
    assert dip["kl_to_dense"] > 0.01 and dip["top1_agreement"] < 1.0
    assert dip["perplexity"] != dense["perplexity"]
    assert (dip["details"]["kl"] >= -1e-9).all()
    # the pruned forward moves fewer bytes than the dense one
    assert dip["mlp_bytes_per_token"] == pytest.approx(dense["mlp_bytes_per_token"] / 2, rel=0.01)


# ------------------------------------------------------------------------------------------- (c)
def test_dip_ca_with_gamma_one_is_dip(batch):
    dip, ca1, ca = get(batch, DIP), get(batch, CA_ONE), get(batch, CA)
    np.testing.assert_array_equal(ca1["details"]["logits"], dip["details"]["logits"])
    for k in ("perplexity", "kl_to_dense", "top1_agreement", "closed_loop_hit_rate", "closed_loop_flash_bytes_per_token", "open_loop_hit_rate"):
        assert ca1[k] == dip[k], k
    a, b = ca1["details"]["access_log"], dip["details"]["access_log"]
    for g in a.groups:
        np.testing.assert_array_equal(a.groups[g].missed_bits, b.groups[g].missed_bits)
    # a smaller gamma favours cached columns: more hits, and a different model output
    assert ca["closed_loop_hit_rate"] > dip["closed_loop_hit_rate"] + 0.1
    assert ca["perplexity"] != dip["perplexity"]


# ------------------------------------------------------------------------------------------- (d)
def test_dense_closed_loop_hit_rate_is_the_open_loop_one(batch):
    r = get(batch, DENSE_FULL)
    assert r["closed_loop_hit_rate"] == r["open_loop_hit_rate"] == 1.0    # everything cached after token 0 (warm-up)
    assert r["closed_loop_flash_bytes_per_token"] == r["open_loop_flash_bytes_per_token"] == 0.0
    d = get(batch, DENSE)
    assert d["closed_loop_hit_rate"] == d["open_loop_hit_rate"]
    assert d["closed_loop_flash_bytes_per_token"] == d["open_loop_flash_bytes_per_token"] > 0


@pytest.mark.parametrize("cfg", [STATIC, RANDOM], ids=["static", "random"])
def test_activation_independent_masks_give_the_open_loop_figures(batch, cfg):
    """static and random masks do not depend on the activations: the closed loop must reproduce
    replay's cache figures exactly although its forward is pruned (calibration, per-layer generators
    and the once-per-token cache step all agree with replay)."""
    r = get(batch, cfg)
    assert r["kl_to_dense"] > 0.01
    assert r["closed_loop_hit_rate"] == r["open_loop_hit_rate"]
    assert r["closed_loop_flash_bytes_per_token"] == r["open_loop_flash_bytes_per_token"]


def test_activation_dependent_masks_differ_from_the_open_loop(batch):
    for cfg in (DIP, CA):
        r = get(batch, cfg)
        assert r["closed_loop_hit_rate"] != r["open_loop_hit_rate"]
        assert abs(r["closed_loop_hit_rate"] - r["open_loop_hit_rate"]) < 0.1


@pytest.mark.parametrize("cfg", [DIP, CA, RANDOM], ids=["dip", "dip-ca", "random"])
def test_replaying_the_closed_loops_own_activations_reproduces_it(batch, cfg):
    """Replay over the activations the closed loop scored must choose the same masks and see the same
    hits token by token: residency is the state after the previous token, stepped once per token."""
    r = get(batch, cfg)
    c = r["config"]
    params = {k: c[k] for k in ("gamma", "fixed_top_n", "seed") if k in c}
    log = simulator.replay(r["details"]["closed_trace"], c["masking"], c["cache"], keep=c["keep"],
                           dram_fraction=c["dram_fraction"], warmup=r["warmup"], **params)
    closed = r["details"]["access_log"]
    assert set(log.groups) == set(closed.groups) == {"upgate", "down"}
    for g in log.groups:
        np.testing.assert_array_equal(log.groups[g].selected, closed.groups[g].selected)
        np.testing.assert_array_equal(log.groups[g].hits, closed.groups[g].hits)
        np.testing.assert_array_equal(log.groups[g].missed_bits, closed.groups[g].missed_bits)
    assert log.totals()["hit_rate"] == r["closed_loop_hit_rate"]


# ------------------------------------------------------------------------------------------- (e)
@pytest.fixture
def no_model(monkeypatch):
    import traces.models

    def boom(*a, **k):
        raise AssertionError("the model must not be loaded for bad input")

    monkeypatch.setattr(traces.models, "load_model", boom)


@pytest.mark.parametrize("cfg, message", [
    ({"masking": "dip", "cache": "belady"}, "belady needs the future; it cannot run in the closed loop"),
    ({"masking": "dip-ca", "gamma": 1.5}, "dip-ca gamma: must be a number in [0, 1], got 1.5"),
    ({"masking": "dip-ca", "gamma": -0.1}, "dip-ca gamma: must be a number in [0, 1]"),
    ({"masking": "dipp"}, "unknown masking policy 'dipp'"),
    ({"masking": "dip", "gamma": 0.2}, "config 2: gamma: masking policy 'dip' has no parameter 'gamma'"),
    ({"masking": "dip", "cache": "lru2"}, "unknown cache policy 'lru2'"),
    ({"masking": "dip", "keep": 0}, "config 2: keep: must be a number in (0, 1], got 0"),
    ({"masking": "dip", "dram_fraction": 2}, "config 2: dram_fraction: must be a number in [0, 1], got 2"),
    ({"masking": "dip", "allocation": "best"}, "unknown allocation 'best'"),
])
def test_bad_configurations_are_refused_before_model_work(no_model, cfg, message):
    with pytest.raises(DipsimError) as e:
        accuracy.evaluate("smollm2-135m", [DIP, cfg], tokens=16, reuse=False)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_run_arguments_are_refused(no_model):
    for kw, message in [({"tokens": 1}, "tokens must be >= 2"), ({"tokens": 16, "warmup": 16}, "warmup must be in"),
                        ({"tokens": 16, "prefill": 15}, "prefill must be in")]:
        with pytest.raises(DipsimError, match=message.replace("(", r"\(")):
            accuracy.evaluate("smollm2-135m", DIP, reuse=False, **kw)


def test_cli_refuses_belady_in_one_line(no_model, capsys):
    assert cli.main(["eval", "--cache", "belady", "--masking", "dip", "--tokens", "16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "dipsim: error: belady needs the future; it cannot run in the closed loop " \
                  "(use it in open-loop replay with cache-oblivious masking)"


# ------------------------------------------------------------------------------------------- (f)
@pytest.mark.slow
@pytest.mark.parametrize("cfg", [CA, RANDOM], ids=["dip-ca", "random"])
def test_a_configuration_gives_the_same_figures_alone_or_with_others(smollm2, batch, token_batch, cfg):
    together = get(batch, cfg)
    alone = accuracy.evaluate(smollm2, cfg, tokens=TOKENS, reuse=False, details=True)[0]
    assert alone["batch_rows"] == 2 and together["batch_rows"] == 7
    np.testing.assert_array_equal(alone["details"]["logits"], together["details"]["logits"])
    for k in ("perplexity", "kl_to_dense", "top1_agreement", "closed_loop_hit_rate", "closed_loop_flash_bytes_per_token",
              "open_loop_hit_rate", "dense_perplexity"):
        assert alone[k] == together[k], k
    # the token loop, row by row, is batch-invariant as well
    tok_alone = accuracy.evaluate(smollm2, cfg, tokens=TOKENS, reuse=False, details=True, loop="token")[0]
    tok = get(token_batch, cfg)
    assert tok_alone["batch_rows"] == 2 and tok["batch_rows"] == 7
    for k in ("perplexity", "kl_to_dense", "closed_loop_hit_rate"):
        assert tok_alone[k] == pytest.approx(tok[k], rel=1e-9, abs=1e-12), k


def _first_divergence(ma, mb):
    """Earliest (token, layer, group) where two loops' masks differ, in forward order, or None."""
    order = [g for g in ("upgate", "up", "gate", "down") if g in ma]
    found = [(int(t), int(l), order.index(g), g) for g in order
             for t, l in np.argwhere((ma[g] != mb[g]).any(axis=2))]
    return min(found) if found else None


def assert_parted_only_at_a_near_tie(a, b, cfg, hit_rate_tol=0.05):
    """Two loops' results of ``cfg`` (with details): until their masks first differ the two loops have
    the same caches, so the first different choice must be a top-k decision whose margin is within
    the float noise between the two loops' scores there."""
    from simulator import caches

    ma, mb = a["details"]["masks"], b["details"]["masks"]
    first = _first_divergence(ma, mb)
    if first is None:
        assert a["closed_loop_hit_rate"] == b["closed_loop_hit_rate"]
        return
    t, layer, _, g = first
    kind = "h" if g == "down" else "x"
    sa, sb = (np.abs(getattr(r["details"]["closed_trace"], kind)(layer)[t]).astype(np.float32) for r in (a, b))
    eps = float(np.abs(sa - sb).max())
    cache = caches.make(cfg.get("cache", "lru"), n_layers=1, n_columns=sa.size,
                        capacity=int(a["details"]["access_log"].groups[g].capacity[layer]))
    cache.run_layer(0, ma[g][:t, layer])         # the layer's contents before token t (same in both)
    gamma = np.float32(cfg.get("gamma", 1.0))
    pa = np.where(cache.resident[0], sa, sa * gamma)
    k = int(ma[g][t, layer].sum())
    thr = np.sort(pa)[-k]
    differ = ma[g][t, layer] != mb[g][t, layer]
    assert np.abs(pa[differ] - thr).max() <= 2 * eps + 1e-6 * thr, (first, eps)
    assert eps < 1e-3 * sa.max()                   # float noise, not a different computation
    assert abs(a["closed_loop_hit_rate"] - b["closed_loop_hit_rate"]) < hit_rate_tol


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [DIP, CA_ONE, CA], ids=["dip", "dip-ca-1", "dip-ca-0.2"])
def test_float32_loops_part_only_at_a_near_tie(batch, token_batch, cfg):
    """float32 rounds the parallel and the incremental attention differently; the loops may only part
    at a near tie (:func:`assert_parted_only_at_a_near_tie`)."""
    assert_parted_only_at_a_near_tie(get(batch, cfg), get(token_batch, cfg), cfg)


@pytest.mark.slow
def test_loops_agree_where_masks_do_not_depend_on_activations(batch, token_batch):
    for cfg in (DENSE, DENSE_FULL, STATIC, RANDOM, DIP_FULL):
        a, b = get(batch, cfg), get(token_batch, cfg)
        assert a["closed_loop_hit_rate"] == b["closed_loop_hit_rate"] and a["open_loop_hit_rate"] == b["open_loop_hit_rate"]
        assert a["perplexity"] == pytest.approx(b["perplexity"], rel=0.02)


@pytest.mark.slow
def test_layer_and_token_loops_choose_identical_masks_in_float64():
    """In float64 the float noise between parallel and incremental attention stays far below any
    top-k decision: both loops choose the same masks at every token, layer and group, for dip and
    for dip-ca (whose choices depend on the cache, so one different mask would propagate)."""
    from traces.models import load_model

    lm = load_model("smollm2-135m", verbose=False)
    lm.model.double()
    cfgs = [{"masking": "dip", "keep": 0.5}, {"masking": "dip-ca", "gamma": 0.5, "keep": 0.5}]
    layer = accuracy.evaluate(lm, cfgs, tokens=128, reuse=False, details=True, loop="layer")
    token = accuracy.evaluate(lm, cfgs, tokens=128, reuse=False, details=True, loop="token")
    for a, b in zip(layer, token):
        assert set(a["details"]["masks"]) == {"upgate", "down"}
        for g, m in a["details"]["masks"].items():
            assert m.shape == (127, 30, 576 if g == "upgate" else 1536)   # position 0 runs densely
            np.testing.assert_array_equal(m, b["details"]["masks"][g], err_msg=f"{a['label']} {g}")
        assert a["closed_loop_hit_rate"] == b["closed_loop_hit_rate"]
        assert a["perplexity"] == pytest.approx(b["perplexity"], rel=1e-9)


# ------------------------------------------------------------------------------------------- cache, CLI
def test_results_are_cached_on_disk(smollm2, tmp_path, monkeypatch):
    monkeypatch.setattr(accuracy.store, "results_dir", lambda: tmp_path)
    cfgs = [{"masking": "dip-ca", "gamma": 0.5, "keep": 0.5}, {"masking": "glu-prune", "keep": 0.5}]
    first = accuracy.evaluate(smollm2, cfgs, tokens=12, warmup=2)
    assert [r["from_cache"] for r in first] == [False, False]
    files = sorted(tmp_path.iterdir())
    assert len(files) == 2 and all(f.suffix == ".json" for f in files)   # no temp files left behind

    import traces.models

    monkeypatch.setattr(traces.models, "load_model", lambda *a, **k: pytest.fail("cached results need no model"))
    again = accuracy.evaluate("smollm2-135m", list(reversed(cfgs)), tokens=12, warmup=2)
    assert [r["from_cache"] for r in again] == [True, True]
    for a, b in zip(first, reversed(again)):
        for k in accuracy.METRICS:
            assert a[k] == b[k], k
        assert a["config"] == b["config"]
    # a different budget is a different result
    other = {**cfgs[0], "dram_fraction": 0.25}
    monkeypatch.setattr(traces.models, "load_model", lambda *a, **k: smollm2)
    r = accuracy.evaluate("smollm2-135m", other, tokens=12, warmup=2)[0]
    assert not r["from_cache"] and r["closed_loop_hit_rate"] != first[0]["closed_loop_hit_rate"]


def test_cli_eval_prints_json_for_several_configurations(smollm2, monkeypatch, capsys, tmp_path):
    import traces.models

    monkeypatch.setattr(traces.models, "load_model", lambda *a, **k: smollm2)
    monkeypatch.setattr(accuracy.store, "results_dir", lambda: tmp_path)
    argv = ["eval", "--tokens", "12", "--warmup", "2", "--masking", "dip-ca", "--gamma", "1", "--gamma", "0",
            "--keep", "0.5", "-q", "--format", "json"]
    assert cli.main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["config"]["gamma"] for r in rows] == [1.0, 0.0]
    for r in rows:
        assert {"perplexity", "kl_to_dense", "top1_agreement", "closed_loop_hit_rate", "open_loop_hit_rate"} <= set(r)
        assert r["scored_tokens"] == 11 and r["prefix_token"] is None   # SmolLM2: no prefix, position 0 dense
    assert rows[1]["closed_loop_hit_rate"] > rows[0]["closed_loop_hit_rate"]
    monkeypatch.setattr(traces.models, "load_model", lambda *a, **k: pytest.fail("the results are cached"))
    assert cli.main(argv[:-2]) == 0     # the table, from the cached results
    out = capsys.readouterr().out
    assert "dip-ca(gamma=0.0) keep=0.5 lru dram=0.5" in out and "perplexity" in out


def test_cli_configurations(tmp_path):
    """eval's repeatable options run as a product; a masking parameter joins only the policies that
    take it; --config entries follow; a parameter no chosen policy takes is refused."""
    import argparse

    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    cli_eval.add_parser(sub)
    a = p.parse_args(["eval", "--masking", "dip", "--masking", "dip-ca", "--gamma", "0.2", "--gamma", "0.5",
                      "--keep", "0.5"])
    got = cli_eval.configs_from_args(a)
    assert [(c["masking"], c.get("gamma")) for c in got] == [("dip", None), ("dip-ca", "0.2"), ("dip-ca", "0.5")]
    assert all(c["keep"] == "0.5" for c in got)
    f = tmp_path / "sweep.yaml"
    f.write_text("- {masking: dip, keep: 0.75}\n- masking: dense\n")
    a = p.parse_args(["eval", "--config", str(f), "--config", '{"masking": "glu-prune"}'])
    assert cli_eval.configs_from_args(a) == [{"masking": "dip", "keep": 0.75}, {"masking": "dense"},
                                             {"masking": "glu-prune"}]
    assert cli_eval.configs_from_args(p.parse_args(["eval"])) == [{"masking": "dip"}]
    with pytest.raises(DipsimError, match="expected a mapping"):
        cli_eval.configs_from_args(p.parse_args(["eval", "--config", "[1, 2]"]))
    with pytest.raises(DipsimError, match="--gamma: none of the masking policies asked for"):
        cli_eval.configs_from_args(p.parse_args(["eval", "--masking", "dip", "--gamma", "0.3"]))
    # run options (--tokens, --warmup) add no configuration; options given once fill in --config entries
    one = '{"masking": "dip", "keep": 0.75}'
    assert cli_eval.configs_from_args(p.parse_args(["eval", "--tokens", "64", "--warmup", "4", "--config", one])) == [
        {"masking": "dip", "keep": 0.75}]
    got = cli_eval.configs_from_args(p.parse_args(["eval", "--cache", "fifo", "--weight-format", "int8", "--keep", "0.3",
                                                   "--config", one]))
    assert got == [{"masking": "dip", "keep": 0.75, "cache": "fifo", "weight_format": "int8"}]
    with pytest.raises(DipsimError, match="--keep is given 2 times beside --config"):
        cli_eval.configs_from_args(p.parse_args(["eval", "--keep", "0.5", "--keep", "0.7", "--config", one]))
    # a policy's parameters may also sit under masking_params; given twice they are refused
    assert normalize_config({"masking": "dip-ca", "masking_params": {"gamma": 0.9}})["gamma"] == 0.9
    with pytest.raises(DipsimError, match="also given beside it"):
        normalize_config({"masking": "dip-ca", "gamma": 0.2, "masking_params": {"gamma": 0.9}})


def test_module_imports_without_torch():
    import subprocess
    import sys

    code = "import sys, simulator.accuracy; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------- architectures
def _tiny_llama_and_phi3(tokenizer, tmp_path):
    """A random 2-layer Llama and the same function as a Phi-3 (fused qkv_proj and gate_up_proj)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Phi3Config, Phi3ForCausalLM

    from traces.models import ModelSource, wrap_model

    torch.manual_seed(0)
    kw = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False,
              rms_norm_eps=1e-5, hidden_act="silu", bos_token_id=tokenizer.bos_token_id)
    llama = LlamaForCausalLM(LlamaConfig(**kw)).eval()
    phi3 = Phi3ForCausalLM(Phi3Config(**kw, resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0,
                                      pad_token_id=0)).eval()
    sd = llama.state_dict()
    fused = {}
    for k, v in sd.items():
        pre = k.rsplit(".", 2)[0]
        if k.endswith("self_attn.q_proj.weight"):
            fused[pre + ".qkv_proj.weight"] = torch.cat([sd[pre + ".q_proj.weight"], sd[pre + ".k_proj.weight"],
                                                         sd[pre + ".v_proj.weight"]])
        elif k.endswith("mlp.gate_proj.weight"):
            fused[pre + ".gate_up_proj.weight"] = torch.cat([sd[pre + ".gate_proj.weight"],
                                                             sd[pre + ".up_proj.weight"]])
        elif not any(k.endswith(s) for s in ("k_proj.weight", "v_proj.weight", "up_proj.weight")):
            fused[k] = v
    phi3.load_state_dict(fused, strict=True)
    weight = {"weight_dtype": "float32", "bytes_per_weight": 4.0, "static_bytes_per_weight": 4.0}
    out = []
    for name, m in (("tiny-llama", llama), ("tiny-phi3", phi3)):
        d = tmp_path / name
        d.mkdir()
        out.append(wrap_model(m, tokenizer, ModelSource(name, "hf", d), weight))
    return out


def test_fused_gate_up_projection_matches_separate_projections(smollm2, tmp_path):
    llama, phi3 = _tiny_llama_and_phi3(smollm2.tokenizer, tmp_path)
    assert llama.info.mlp_kind == "gate_up_down" and phi3.info.mlp_kind == "fused_gate_up"
    cfgs = [{"masking": "dip", "keep": 0.5},
            {"masking": "dip", "keep_up": 0.5, "keep_gate": 0.5, "keep_down": 0.5},   # split groups, same masks
            {"masking": "dip", "keep_up": 0.75, "keep_gate": 0.25, "keep_down": 0.5},
            {"masking": "dip-ca", "gamma": 0.3, "keep_up": 0.25, "keep_gate": 0.75, "keep_down": 0.5}]
    a = accuracy.evaluate(llama, cfgs, tokens=24, warmup=2, reuse=False)
    b = accuracy.evaluate(phi3, cfgs, tokens=24, warmup=2, reuse=False)
    assert a[0]["dense_perplexity"] == pytest.approx(b[0]["dense_perplexity"], rel=1e-5)
    for ra, rb in zip(a, b):
        for k in ("perplexity", "kl_to_dense", "closed_loop_hit_rate", "open_loop_hit_rate"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-5), (ra["label"], k)
    assert a[1]["perplexity"] == pytest.approx(a[0]["perplexity"], rel=1e-6)   # same masks, split or not
    assert set(a[2]["keep_actual"]) == {"up", "gate", "down"}
    assert a[2]["keep_actual"]["gate"] == 0.25 and a[2]["keep_actual"]["up"] == 0.75
    # the two halves are not interchangeable: swapping the keeps changes the result
    swapped = accuracy.evaluate(phi3, {"masking": "dip", "keep_up": 0.25, "keep_gate": 0.75, "keep_down": 0.5},
                                tokens=24, warmup=2, reuse=False)[0]
    assert swapped["perplexity"] != pytest.approx(b[2]["perplexity"], rel=1e-4)


@pytest.mark.slow
def test_batched_gemm_mode_agrees_to_float_rounding(smollm2, batch):
    """The token loop with batch_invariant=False decodes with batched GEMMs: the dense model is the
    same to float rounding, and a full-keep dip still equals dense inside its batch. Perplexity within
    1e-4 relative: 1.8e-5 measured on an AVX2-only EPYC, whose GEMM kernels round differently from the
    Xeon's (< 1e-5 there); a real difference between the two modes moves it by whole percents."""
    res = accuracy.evaluate(smollm2, [DENSE, DIP_FULL], tokens=TOKENS, reuse=False, batch_invariant=False,
                            details=True, loop="token")
    ref = get(batch, DENSE)
    assert res[0]["perplexity"] == pytest.approx(ref["perplexity"], rel=1e-4)
    np.testing.assert_allclose(res[0]["details"]["logits"], ref["details"]["logits"], rtol=0, atol=1e-3)
    assert res[1]["kl_to_dense"] == pytest.approx(0.0, abs=1e-9)
