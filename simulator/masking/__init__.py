"""Masking policies, one module each, registered under the names used in YAML and on the CLI.

    from simulator import masking
    policy = masking.make("dip-ca", gamma=0.2)
    mask = policy.select(scores, resident, k)     # [L, N] float, [L, N] bool, int or [L] -> [L, N] bool
"""
from . import (cats, cats_ca, dejavu, dense, dip, dip_ca, glu_prune, powerinfer, predictor, random,  # noqa: F401
               static, threshold)  # (registration)
from .base import REGISTRY, MaskingPolicy, as_k, make, names, parameters, register_masking

__all__ = ["REGISTRY", "MaskingPolicy", "as_k", "make", "names", "parameters", "register_masking"]
