"""Masking policies, one module each, registered under the names used in YAML and on the CLI.

    from simulator import masking
    policy = masking.make("dip-ca", gamma=0.2)
    mask = policy.select(scores, resident, k)     # [L, N] float, [L, N] bool, int or [L] -> [L, N] bool
"""
from . import dense, dip, dip_ca, glu_prune, predictor, random, static, threshold  # noqa: F401  (registration)
from .base import REGISTRY, MaskingPolicy, as_k, make, names, parameters, register_masking

__all__ = ["REGISTRY", "MaskingPolicy", "as_k", "make", "names", "parameters", "register_masking"]
