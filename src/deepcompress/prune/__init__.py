"""The pruning stage of Deep Compression (section 2; Han et al. 2015, "Learning both Weights and
Connections"): magnitude masks, in-place pruning with masks kept through retraining, iterative
prune/retrain rounds, dropout adjustment, per-layer sensitivity scans and the clean-up of units that
pruning has emptied (:mod:`deepcompress.prune.dead`). Biases are never pruned."""

from deepcompress.prune.apply import (
    adjust_dropout_,
    get_masks,
    keep_pruned_zero,
    mask_gradients_,
    prune_,
    set_masks_,
    sparsity_report,
)
from deepcompress.prune.auto import AUTO_FRACTIONS, SensitivityPlanner, plan_sparsity
from deepcompress.prune.config import BiasPolicy, PruneConfig, PruneMethod, PruneRamp
from deepcompress.prune.dead import remove_dead_units_
from deepcompress.prune.masks import global_masks, sparsity_mask, std_mask
from deepcompress.prune.schedule import finish_round_, iterative_prune_, prune_round_
from deepcompress.prune.sensitivity import format_sensitivity, plot_sensitivity, sensitivity_scan

__all__ = [
    "AUTO_FRACTIONS",
    "BiasPolicy",
    "PruneConfig",
    "PruneMethod",
    "PruneRamp",
    "SensitivityPlanner",
    "adjust_dropout_",
    "finish_round_",
    "format_sensitivity",
    "get_masks",
    "global_masks",
    "iterative_prune_",
    "keep_pruned_zero",
    "mask_gradients_",
    "plan_sparsity",
    "plot_sensitivity",
    "prune_",
    "prune_round_",
    "remove_dead_units_",
    "sensitivity_scan",
    "set_masks_",
    "sparsity_mask",
    "sparsity_report",
    "std_mask",
]
