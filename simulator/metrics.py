"""Every metric dipsim reports, once: its name, unit and meaning. Replay, the engine, accuracy in the
loop, mrc, sweeps and every JSON output use these names (sweep rows prefix them with ``m.``;
per-group figures are ``<group>.<name>``, e.g. ``m.down.hit_rate``).

Conventions: bytes and seconds in base units unless the name carries another (``_ms``, ``_mb``);
``per_token`` figures are whole-model sums over layers; ``per_layer`` figures are means over layers;
counts are whole numbers; rates by bytes unless named otherwise.
"""
from __future__ import annotations

from common.tables import markdown_table

#: name -> (unit, meaning)
METRICS: dict[str, tuple[str, str]] = {
    # replay (open loop over a trace)
    "measured_tokens": ("tokens", "tokens after the warm-up that the figures average over"),
    "hit_rate": ("fraction", "bytes of the selected columns found in the DRAM cache / bytes selected (all groups)"),
    "column_hit_rate": ("fraction", "the same by columns rather than bytes"),
    "flash_bytes_per_token": ("B/token", "bytes of the missed weight columns, read from flash (whole model)"),
    "dram_bytes_per_token": ("B/token", "bytes of the cached weight columns read from DRAM (whole model)"),
    "mlp_bytes_per_token": ("B/token", "bytes of all selected MLP columns (whole model)"),
    "columns_per_layer": ("columns", "columns of a matrix group in one layer (d_model for up/gate, d_ff for down "
                                     "and for a neuron group, whose column is a neuron)"),
    "bytes_per_column": ("B", "bytes of one column of the group at the weight format (a neuron: its bundle, gate + "
                              "up + down or up + down)"),
    "keep": ("fraction", "columns (neurons) selected / available, over tokens and layers"),
    "capacity_columns_per_layer": ("columns", "DRAM cache capacity of the group, mean over layers"),
    "cache_budget_bytes": ("B", "DRAM budget of the column cache, over all layers and groups"),
    "cache_budget_from": ("text", "what decided it: dram_fraction (of the MLP weights), dram_bytes, device (usable "
                                  "DRAM - static weights - KV cache - runtime reserve; engine.budget) or default "
                                  "(half the MLP weights)"),
    "selected_columns_per_token": ("columns/token", "columns of the group selected per token (whole model)"),
    # engine (a device)
    "tokens_per_s": ("tokens/s", "decode throughput on the device model (after warm-up)"),
    "latency_ms_mean": ("ms", "mean time per token"),
    "latency_ms_p50": ("ms", "median time per token"),
    "latency_ms_p99": ("ms", "99th percentile of the time per token"),
    "flash_read_bytes_per_token": ("B/token", "bytes the flash device reads: whole pages, merged requests (>= "
                                              "flash_bytes_per_token, the weights' own bytes)"),
    "flash_requests_per_token": ("requests/token", "read requests issued to flash, mean per token"),
    "mean_request_bytes": ("B", "mean size of a flash read request"),
    "dram_read_bytes_per_token": ("B/token", "everything read from DRAM: cached columns, landed misses (when they "
                                             "pass through DRAM), attention weights, KV cache, LM head"),
    "flash_ms_per_token": ("ms/token", "time the flash device is busy per token"),
    "dram_ms_per_token": ("ms/token", "time DRAM reads take per token"),
    "compute_ms_per_token": ("ms/token", "arithmetic time per token"),
    "stall_ms_per_token": ("ms/token", "time per token waiting on flash while DRAM and compute are idle"),
    "energy_mj_per_token": ("mJ/token", "flash + DRAM read energy per token (profiles with energy figures)"),
    "dram_footprint_bytes": ("B", "static weights + the DRAM cache + the KV cache at its longest"),
    "dram_cache_bytes": ("B", "bytes of the DRAM cache of MLP columns"),
    "static_dram_bytes": ("B", "static weights (attention, embedding, LM head, a LoRA adapter) + the longest KV "
                               "cache"),
    "adapter_bytes": ("B", "a LoRA adapter's fp16 bytes, kept in DRAM beside the weights (unmerged)"),
    "fits_in_dram": ("bool", "the footprint fits the device's usable DRAM"),
    "memory_saved_bytes": ("B", "DRAM footprint saved against holding the whole dense model in DRAM (static "
                                "weights + every MLP weight + the longest KV cache; the paper's memory baseline)"),
    "memory_saved_fraction": ("fraction", "the same as a share of that whole-model footprint"),
    "dense_tokens_per_s": ("tokens/s", "the dense baseline: the dense model (every column, no variant or adapter) on "
                                       "the same trace and device with the same cache budget rule, cache, allocation, "
                                       "weight format, layout (the neuron layout aside: the dense model has no neuron group) "
                                       "and engine options"),
    "speedup_vs_dense": ("x", "tokens_per_s / dense_tokens_per_s: the speed-up over the dense model on the same DRAM "
                              "(exactly 1 for the dense model itself)"),
    "dense_dram_footprint_bytes": ("B", "the dense baseline's dram_footprint_bytes"),
    "memory_saved_vs_dense_fraction": ("fraction", "1 - dram_footprint_bytes / dense_dram_footprint_bytes: DRAM "
                                                   "saved against the dense baseline; 0 unless the point's model is "
                                                   "not the plain one (a pruned variant's smaller cache at the same "
                                                   "dram_fraction; an adapter's bytes, negative)"),
    "dense_mlp_in_dram": ("bool", "the dense baseline reads no MLP weights from flash after warm-up: its DRAM cache "
                                  "holds the whole MLP, so speedup_vs_dense compares with a model that never touches "
                                  "flash"),
    "dense_stream_tokens_per_s": ("tokens/s", "a secondary baseline: streaming the whole dense MLP from flash every "
                                              "token (read ahead, nothing cached), whatever the DRAM holds"),
    "speedup_vs_dense_stream": ("x", "tokens_per_s / dense_stream_tokens_per_s (not the gain over the dense model "
                                     "on the same DRAM: see speedup_vs_dense)"),
    "analytic_tokens_per_s": ("tokens/s", "the DIP paper's bytes/bandwidth model on the same access log"),
    "engine_events": ("events", "events of the timeline: a layer per token in plain batch mode, every stage and "
                                "request in fine mode or with a chrome trace"),
    "engine_seconds": ("s", "wall time of the engine run"),
    # accuracy in the loop
    "perplexity": ("", "exp(mean next-token NLL) of the scored tokens with the policy in the loop"),
    "dense_perplexity": ("", "the same for the dense model"),
    "kl_to_dense": ("nats", "mean KL(dense || configuration) of the next-token distributions"),
    "top1_agreement": ("fraction", "share of positions where the arg-max token equals the dense model's"),
    "perplexity_low": ("", "lower end of perplexity's 95% interval: circular block bootstrap over the scored "
                           "positions, blocks of 32 (simulator.accuracy.intervals; _high: the upper end)"),
    "perplexity_high": ("", "upper end of perplexity's 95% interval"),
    "perplexity_diff": ("", "perplexity - dense_perplexity on the same positions (configurations that prune)"),
    "perplexity_diff_low": ("", "lower end of the paired difference's 95% interval (the same resampled positions "
                                "for the configuration and dense; _high: the upper end; excludes 0: significant)"),
    "perplexity_diff_high": ("", "upper end of that interval"),
    "kl_to_dense_low": ("nats", "lower end of kl_to_dense's 95% interval (block bootstrap; _high: the upper end)"),
    "kl_to_dense_high": ("nats", "upper end of kl_to_dense's 95% interval"),
    "top1_agreement_low": ("fraction", "lower end of top1_agreement's 95% interval (block bootstrap; _high: upper)"),
    "top1_agreement_high": ("fraction", "upper end of top1_agreement's 95% interval"),
    # accuracy in the loop: the MMLU task (eval --task mmlu; a sweep's accuracy: {task: mmlu})
    "mmlu_accuracy": ("fraction", "questions answered right / questions (the letter of highest log-probability "
                                  "after 'Answer:', lm-eval's MMLU prompt, the policy in the loop)"),
    "mmlu_accuracy_low": ("fraction", "lower end of the Wilson score 95% interval of mmlu_accuracy"),
    "mmlu_accuracy_high": ("fraction", "upper end of that Wilson interval"),
    "mmlu_questions": ("questions", "questions the accuracy counts (--questions-per-topic of every topic)"),
    "mmlu_dense_accuracy": ("fraction", "mmlu_accuracy of the dense model on the same questions"),
    "mmlu_accuracy_diff": ("fraction", "mmlu_accuracy - mmlu_dense_accuracy, the same questions (configurations "
                                       "that prune)"),
    "mmlu_accuracy_diff_low": ("fraction", "lower end of its 95% interval: paired bootstrap over the questions "
                                           "(_high: the upper end; excludes 0: significant)"),
    "mmlu_accuracy_diff_high": ("fraction", "upper end of that interval"),
    "mmlu_mcnemar_p": ("p-value", "McNemar's exact test of the questions only one of the configuration and dense "
                                  "answered right"),
    "mmlu_hit_rate": ("fraction", "closed-loop hit_rate over every masked position of the question stream"),
    "closed_loop_hit_rate": ("fraction", "hit_rate of the closed loop (the masked model's own activations)"),
    "closed_loop_flash_bytes_per_token": ("B/token", "flash_bytes_per_token of the closed loop"),
    "closed_loop_dram_bytes_per_token": ("B/token", "dram_bytes_per_token of the closed loop"),
    "open_loop_hit_rate": ("fraction", "hit_rate of replaying the dense trace of the same tokens"),
    "open_loop_flash_bytes_per_token": ("B/token", "flash_bytes_per_token of that replay"),
    "scored_tokens": ("tokens", "next-token predictions the accuracy figures average over"),
    "prefix_token": ("token id", "the token run before the text (--prefix-token resolved; none: the text's first token "
                                 "is position 0, the attention sink, which runs densely either way)"),
    "mean_nll": ("nats", "mean next-token negative log-likelihood"),
    "keep_actual": ("fraction", "per group: the share of columns the closed loop's masks kept, mean over tokens "
                                "and layers (eval's JSON)"),
    "trace_seconds": ("s", "wall time of the dense pass that every configuration is scored against"),
    "loop_seconds": ("s", "wall time of the closed loop (all configurations of the run, scoring included)"),
    "select_seconds": ("s", "the part of loop_seconds spent in the masking policies and caches"),
    "open_loop_seconds": ("s", "wall time until this configuration's open-loop replay was done"),
    "from_cache": ("bool", "the figures were read from the accuracy store, not measured in this run"),
    # synthetic (extrapolated) traces: the fit's leave-one-model-out error, carried into the row
    "synth_hit_rate_error": ("fraction", "absolute hit-rate error of the trace model on held-out real models, "
                                         "for this configuration (simulator.synth_validation.point_error)"),
    "synth_error_from": ("text", "which validated rows that error comes from"),
    "hit_rate_low": ("fraction", "hit_rate - synth_hit_rate_error (clipped at 0)"),
    "hit_rate_high": ("fraction", "hit_rate + synth_hit_rate_error (clipped at 1)"),
    "tokens_per_s_low": ("tokens/s", "tokens_per_s with the flash time grown by the error's share of the misses"),
    "tokens_per_s_high": ("tokens/s", "tokens_per_s with the flash time shrunk by the same"),
    # sweeps
    "point_seconds": ("s", "wall time of a sweep point (replay, engine, reading the accuracy store)"),
}


def table() -> list[dict[str, str]]:
    """The metric table as rows (for the docs and ``--help``)."""
    return [{"metric": k, "unit": u, "meaning": m} for k, (u, m) in METRICS.items()]


def markdown() -> str:
    """The metric table in Markdown, as the docs show it (``python -m simulator.metrics``; docs/hooks.py generates the metric page from it)."""
    return markdown_table([{"metric": f"`{k}`", "unit": u or "-", "meaning": m} for k, (u, m) in METRICS.items()])


if __name__ == "__main__":
    print(markdown())
