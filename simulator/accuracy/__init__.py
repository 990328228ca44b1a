"""Accuracy in the loop: the real model runs with the masking and cache policies inside its forward.

    from simulator.accuracy import evaluate
    rows = evaluate("smollm2-135m", [{"masking": "dip-ca", "gamma": 0.2, "keep": 0.5, "cache": "lru",
                                      "dram_fraction": 0.5}], tokens=1024)
    rows[0]["perplexity"], rows[0]["kl_to_dense"], rows[0]["closed_loop_hit_rate"], rows[0]["open_loop_hit_rate"]

Open loop (``simulator.replay``) replays masks chosen on the *dense* model's activations. In the
closed loop the masked model runs: the masks of one layer change the activations of every later
layer and token, and with cache-aware masking (DIP-CA) the cache state changes the masks. Both
loops use the very objects replay uses (``replay.prepare`` decides groups, keeps, calibrated
policies and cache capacities exactly as replay does).

* ``configs``: configurations checked and completed without a model, their labels;
* ``layerwise``: the default loop -- one parallel forward per configuration, each layer's policy
  and caches stepped through all tokens in a compiled loop (exact, at prefill speed);
* ``tokenloop``: the token-by-token reference with the KV cache (``loop="token"``);
* ``metrics``: NLL, KL to dense and top-1 agreement from final hidden states;
* ``intervals``: 95% intervals (block bootstrap over positions, Wilson, paired differences to dense);
* ``mmlu_loop`` / ``mmlu``: the MMLU task -- multiple-choice prompts answered with the policy in
  the loop, the cache carried from question to question (``evaluate_mmlu``);
* ``store``: the on-disk store of results; ``evaluate``: the entry point of the text task;
* ``session``: the model and dense pass a process keeps from one ``evaluate`` to the next.

torch is imported only inside functions.
"""
from . import session
from .configs import config_label, normalize_config
from .evaluate import LOOPS, METRICS, evaluate
from .mmlu import MMLU_METRICS, evaluate_mmlu
from .store import results_dir

__all__ = ["LOOPS", "METRICS", "MMLU_METRICS", "config_label", "evaluate", "evaluate_mmlu", "normalize_config",
           "results_dir", "session"]
