"""Replay a masking policy and a DRAM cache policy over a trace: which columns come from where.

    log = simulator.replay(trace, "dip-ca", "lru", "uniform", keep=0.5, dram_fraction=0.5, gamma=0.2)
    log.totals()     # hit rate, flash and DRAM bytes per token, per-group figures

``setup`` decides groups, keeps, calibrated policies and cache capacities; ``run`` takes every
layer through all tokens (the policy and its caches in compiled loops); ``log`` holds the result.
The first ``warmup`` tokens are reported apart from the totals. ``dram_bytes`` counts bytes of
cached (hit) columns read from DRAM, ``flash_bytes`` bytes of missed columns read from flash --
the paper's split; the engine adds the static weights and the KV cache.
"""
from .log import AccessLog, GroupLog
from .run import GroupRun, access_log, group_runs, new_cache, progress_bar, replay, replay_config
from .setup import (Group, ReplaySetup, bytes_per_weight, calibration, calibration_scores, make_groups,
                    needs_calibration, needs_gate_activations, prepare)

__all__ = ["AccessLog", "GroupLog", "GroupRun", "access_log", "group_runs", "new_cache", "progress_bar", "replay", "replay_config",
           "Group", "ReplaySetup", "bytes_per_weight", "calibration", "calibration_scores", "make_groups", "needs_calibration",
           "needs_gate_activations", "prepare"]
