"""Magnitude pruning: the simple baseline SparseGPT is compared with (Frantar & Alistarh, ICML 2023,
arXiv 2301.00774, Sec. 4: "magnitude pruning ... applied layer-wise").

Per weight matrix, the ``round(sparsity * numel)`` entries of smallest ``|w|`` are set to zero; the
rest keep their values. No calibration data: it is what SparseGPT's OBS saliency ``w^2 / [H^-1]_qq``
becomes when the Hessian is a multiple of the identity (uncorrelated, equally scaled inputs) --
without the updates of the kept weights that compensate the pruned ones.
"""
from __future__ import annotations

from .sparsegpt import check_sparsity


def magnitude_prune(W, sparsity: float):
    """``(W', pruned)``: ``W`` (not modified) with its ``round(sparsity * numel)`` smallest-magnitude
    entries zeroed (ties: lowest flat index first), float32, and the bool mask of pruned entries."""
    import torch

    sparsity = check_sparsity(sparsity)
    W = W.detach().to(torch.float32)
    n_zero = round(sparsity * W.numel())
    pruned = torch.zeros(W.shape, dtype=torch.bool)
    if n_zero > 0:
        pruned.view(-1)[torch.sort(W.abs().flatten(), stable=True).indices[:n_zero]] = True
    return W.masked_fill(pruned, 0.0), pruned
