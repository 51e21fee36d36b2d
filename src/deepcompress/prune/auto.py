"""Automatic per-layer pruning targets, re-planned every round from the model's current sensitivity.

Han et al. (2015, section 4.1) read each layer's sensitivity curve (Fig. 6) and set its threshold by
hand; Deep Compression reuses those hand-set thresholds. Method ``"auto"`` of :class:`PruneConfig`
does it automatically and *gradually*: at the start of every prune/retrain round it scans each layer
alone at a grid of sparsities on a validation set (:func:`sensitivity_scan`, no retraining), and
spends the round's accuracy budget (``PruneConfig.budget``, the summed one-shot drop allowed) where it
removes the most weights (:func:`deepcompress.budget.greedy_allocate`). Retraining then recovers the
loss and the next round scans the retrained model, so tolerant layers keep being pruned while
sensitive ones stop early, with no per-layer numbers in the config.

The whole run is held to ``PruneConfig.tolerance``: the validation accuracy of the retrained model
may fall at most that far below the reference's. Each round's budget is capped by ``recovery`` times
what is left of it (a one-shot drop is measured before retraining, which wins most of it back), and
once the retrained model is at the floor the plan prunes nothing more (the remaining rounds only retrain).
"""

from __future__ import annotations

from typing import Callable, Sequence

from torch import nn

from deepcompress.budget import Option, greedy_allocate, monotone_costs
from deepcompress.selection import select_layers
from deepcompress.prune.apply import MASK
from deepcompress.prune.config import PruneConfig
from deepcompress.prune.sensitivity import sensitivity_scan

# Finer steps at high sparsity, where fc layers of the paper's networks end (91-96% pruned).
AUTO_FRACTIONS: tuple[float, ...] = (
    0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.975, 0.98, 0.985, 0.99,
)


def pruned_fraction(module: nn.Module) -> float:
    """Fraction of ``module.weight`` already pruned by its mask (0 without one)."""
    mask = getattr(module, MASK, None)
    return 0.0 if mask is None else 1.0 - int(mask.sum()) / mask.numel()


def plan_sparsity(scan: dict, sizes: dict[str, int], current: dict[str, float], budget: float) -> dict[str, float]:
    """Per-layer sparsity targets from a :func:`sensitivity_scan` result, spending at most ``budget``.

    ``sizes`` are the layers' weight counts, ``current`` their fractions already pruned. A layer's
    options are its current fraction and every scanned fraction above it; an option saves
    ``size * (fraction - current)`` weights and costs ``baseline - accuracy`` (made monotone).
    """
    baseline = scan["baseline"]
    options: dict[str, list[Option]] = {}
    fractions: dict[str, list[float]] = {}
    for name, row in scan["layers"].items():
        pairs = [(f, baseline - a) for f, a in zip(scan["fractions"], row["accuracy"]) if f > current[name] + 1e-9]
        costs = monotone_costs([0.0] + [c for _, c in pairs])
        fractions[name] = [current[name]] + [f for f, _ in pairs]
        options[name] = [Option(sizes[name] * (f - current[name]), c) for f, c in zip(fractions[name], costs)]
    chosen = greedy_allocate(options, budget)
    return {name: fractions[name][index] for name, index in chosen.items()}


class SensitivityPlanner:
    """The ``plan`` of :func:`iterative_prune_` for method ``"auto"``: one scan and allocation per round.

    Args:
        cfg: the pruning settings (``budget``, ``tolerance``, ``types``, ``patterns``, ``max_sparsity``).
        evaluate: accuracy in [0, 1] of a model on a validation set (keep the test set out of choices).
        reference_accuracy: ``evaluate`` of the unpruned model; the run stays within ``cfg.tolerance`` of it.
        fractions: the sparsity grid scanned (fractions above ``cfg.max_sparsity`` are dropped).

    ``rounds`` maps each planned round (0-based) to its validation accuracy before pruning, the
    budget it was given and the per-layer targets.
    """

    def __init__(
        self,
        cfg: PruneConfig,
        evaluate: Callable[[nn.Module], float],
        reference_accuracy: float,
        fractions: Sequence[float] = AUTO_FRACTIONS,
    ) -> None:
        self.cfg = cfg
        self.evaluate = evaluate
        self.floor = float(reference_accuracy) - cfg.tolerance
        self.fractions = tuple(f for f in fractions if f <= cfg.max_sparsity)
        self.rounds: dict[int, dict[str, object]] = {}

    def __call__(self, model: nn.Module, round_index: int) -> dict[str, float]:
        layers = select_layers(model, self.cfg.types, self.cfg.patterns, self.cfg.ignore)
        scan = sensitivity_scan(model, self.evaluate, self.fractions, self.cfg.types, self.cfg.patterns, progress=False,
                                ignore=self.cfg.ignore)
        sizes = {name: module.weight.numel() for name, module in layers}
        current = {name: pruned_fraction(module) for name, module in layers}
        budget = max(0.0, min(self.cfg.budget, self.cfg.recovery * (scan["baseline"] - self.floor)))
        targets = plan_sparsity(scan, sizes, current, budget)
        self.rounds[round_index] = {"validation_accuracy": scan["baseline"], "budget": budget, "targets": targets}
        return targets
