"""SparseGPT: one-shot unstructured pruning with layer-wise OBS updates (Frantar & Alistarh, "SparseGPT:
Massive Language Models Can Be Accurately Pruned in One-Shot", ICML 2023, arXiv 2301.00774).

For one linear layer ``y = W x`` (``W [rows, cols]``) and calibration inputs ``X [cols, n]`` the goal
is a sparse ``W'`` minimizing ``||W X - W' X||^2``, whose Hessian with respect to a row of ``W`` is
``H = 2 X X^T`` (shared by all rows; the factor 2 and the averaging over samples do not matter).
Pruning weight ``w_q`` of a row and re-fitting the rest optimally (Optimal Brain Surgeon) costs
``w_q^2 / [H^-1]_qq`` and moves the row by ``-w_q / [H^-1]_qq * H^-1[:, q]``. SparseGPT makes this
affordable for every row at once by processing the columns left to right: after column ``j`` is
settled only columns ``> j`` may still move, and the inverse Hessians of these shrinking column
sets are the rows of the upper Cholesky factor ``U`` of ``H^-1`` (``H^-1 = U^T U``; paper Sec. 3.2):
row ``j`` of ``U`` divided by ``U[j, j]`` is row ``j`` of the ``j``-th inverse divided by its
diagonal. So, per column ``j``:

    err = (w_j - q_j) / U[j, j]          q_j: w_j with the pruned entries set to 0
    W[:, j:] -= err * U[j, j:]           (the OBS update of every later column)

Columns are handled in blocks of ``blocksize`` (128 in the paper): inside a block the updates run
column by column; the later columns get the block's accumulated error in one matrix product ("lazy
batch updates", Sec. 3.3). The mask is chosen per block ("adaptive mask selection"): the block's
``sparsity`` share of entries with the smallest OBS saliency ``w^2 / U[j, j]^2``, taken over all
rows jointly, from the weights as the earlier blocks' updates left them. Here the count per block
is set so that the whole matrix has exactly ``round(sparsity * rows * cols)`` zeros.

Dampening: ``H + lambda I`` with ``lambda = percdamp * mean(diag H)`` (1% as in the paper), since
``X X^T`` of a few thousand tokens is often singular; inputs that are zero on every calibration token
(``H_ii = 0``) get ``H_ii = 1`` and their weights are pruned first (they never contribute).
"""
from __future__ import annotations

from typing import Any

from common.errors import DipsimError


def check_sparsity(sparsity: Any) -> float:
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        raise DipsimError(f"sparsity must be a number in [0, 1), got {sparsity!r}") from None
    if not 0.0 <= s < 1.0:
        raise DipsimError(f"sparsity must be in [0, 1) (share of weights set to zero), got {s}")
    return s


def inverse_cholesky(H, percdamp: float = 0.01):
    """Upper Cholesky factor ``U`` of ``(H + lambda I)^-1`` (float64), after fixing dead inputs.

    Returns ``(U, dead)``; ``dead`` marks inputs with ``H_ii = 0``."""
    import torch

    if not 0.0 <= percdamp:
        raise DipsimError(f"percdamp must be >= 0 (dampening as a share of the mean Hessian diagonal), got {percdamp}")
    H = H.to(torch.float64).clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    n = H.shape[0]
    lam = percdamp * torch.mean(torch.diag(H))
    for attempt in range(6):   # a nearly singular H: raise the dampening tenfold until it factors
        Hd = H + (lam * 10 ** attempt) * torch.eye(n, dtype=H.dtype)
        L, info = torch.linalg.cholesky_ex(Hd)
        if int(info) == 0:
            break
    else:
        raise DipsimError("the calibration Hessian is not positive definite even with 1e5 x the dampening; "
                          "use more calibration tokens")
    Hinv = torch.cholesky_inverse(L)
    U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
    if int(info) != 0:
        raise DipsimError("the inverse calibration Hessian is not positive definite; raise percdamp")
    return U, dead


def _block_counts(rows: int, cols: int, sparsity: float, blocksize: int) -> list[tuple[int, int, int]]:
    """``(i1, i2, zeros)`` per block, the zeros summing to ``round(sparsity * rows * cols)`` exactly."""
    out = []
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        out.append((i1, i2, round(sparsity * rows * i2) - round(sparsity * rows * i1)))
    return out


def sparsegpt_prune(W, H, sparsity: float, *, blocksize: int = 128, percdamp: float = 0.01):
    """Prune ``W [rows, cols]`` (a torch tensor, not modified) to ``sparsity`` with the SparseGPT
    algorithm given the calibration Hessian ``H [cols, cols]`` (``X X^T``, any positive scale).

    Returns ``(W', pruned)``: the updated float32 weights, zero where ``pruned`` (bool) is True;
    exactly ``round(sparsity * W.numel())`` entries are pruned."""
    import torch

    sparsity = check_sparsity(sparsity)
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize < 1:
        raise DipsimError(f"blocksize must be a positive integer (columns per lazy-update block), got {blocksize!r}")
    rows, cols = W.shape
    if tuple(H.shape) != (cols, cols):
        raise DipsimError(f"Hessian shape {list(H.shape)} does not match the layer's {cols} inputs")
    U, dead = inverse_cholesky(H, percdamp)
    U = U.to(torch.float32)
    W = W.detach().to(torch.float32).clone()
    W[:, dead] = 0.0
    pruned = torch.zeros((rows, cols), dtype=torch.bool)
    for i1, i2, n_zero in _block_counts(rows, cols, sparsity, blocksize):
        W1 = W[:, i1:i2].clone()
        U1 = U[i1:i2, i1:i2]
        d = torch.diag(U1)
        mask1 = torch.zeros_like(W1, dtype=torch.bool)
        if n_zero > 0:
            saliency = (W1 ** 2 / (d ** 2)[None, :]).flatten()
            # the n_zero smallest saliencies; ties go to the lowest flat index (stable sort)
            mask1.view(-1)[torch.sort(saliency, stable=True).indices[:n_zero]] = True
        err1 = torch.zeros_like(W1)
        for j in range(i2 - i1):
            w = W1[:, j]
            q = torch.where(mask1[:, j], torch.zeros_like(w), w)
            e = (w - q) / d[j]
            W1[:, j:] -= e[:, None] * U1[j, j:][None, :]
            W1[:, j] = q       # exact zeros (the update leaves them only up to rounding)
            err1[:, j] = e
        W[:, i1:i2] = W1
        if i2 < cols:
            W[:, i2:] -= err1 @ U[i1:i2, i2:]
        pruned[:, i1:i2] = mask1
    return W, pruned


class Hessian:
    """Running ``X X^T`` of a layer's inputs (float64 accumulator of float32 batch products) and the
    number of samples, as SparseGPT needs it."""

    def __init__(self, n: int):
        import torch

        self.H = torch.zeros((n, n), dtype=torch.float64)
        self.n = 0

    def add(self, x) -> None:
        """``x [..., cols]``: every row one sample."""
        x2 = x.reshape(-1, x.shape[-1]).float()
        self.H += (x2.T @ x2).double()
        self.n += x2.shape[0]

    def mean(self):
        if self.n == 0:
            raise DipsimError("no calibration samples reached this layer")
        return self.H / self.n
