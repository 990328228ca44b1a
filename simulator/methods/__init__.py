"""The three missing rows of the DIP paper's comparison table (project issue #11), as model variants,
adapters and a masking policy the simulator's loops can run:

* ``prune``: SparseGPT (Frantar & Alistarh, ICML 2023) and magnitude pruning of the MLP matrices
  into a ``variants.Variant`` (pruned weights stored in their sparse format, with its true bytes);
* ``lora``: rank-r LoRA adapters (Hu et al., ICLR 2022) trained with DIP's masks in the forward;
* ``predictor``: per-layer look-ahead predictors of the down group's columns (Deja Vu, Liu et al.,
  ICML 2023), used by the ``predictor`` masking policy (``simulator.masking.predictor``);
* ``data``: the split between the evaluation text and the text these methods learn from.

A configuration of ``simulator.accuracy.evaluate`` names a variant file (``variant``) and/or an
adapter file (``adapter``); ``applied`` puts them into the model for that configuration's forward.
torch is imported inside functions only.
"""
from .data import TRAIN_OFFSET, check_disjoint, training_sequences

__all__ = ["TRAIN_OFFSET", "check_disjoint", "training_sequences"]
