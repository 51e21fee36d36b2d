"""Iterative pruning: prune, retrain, repeat (Han et al. 2015, section 3.3).

Iterative pruning reaches higher compression than one-shot pruning at the same accuracy (AlexNet 9x
against 5x). Each round prunes to the round's ramped target (see :class:`PruneConfig`) and then hands
the model to a caller-supplied ``retrain`` callback; the training loop itself lives elsewhere
(``deepcompress.train``), so this module only orchestrates. A round is two functions
(:func:`prune_round_`, then :func:`finish_round_` after retraining) so that whoever owns checkpoints
can save between them; nothing here knows about resuming.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any, Callable

import torch
from torch import nn

from deepcompress.prune.apply import get_masks, prune_, sparsity_report
from deepcompress.errors import ConfigError
from deepcompress.progress import progress as progress_bar
from deepcompress.prune.config import PruneConfig, PruneMethod, Target


def _revived(model: nn.Module) -> int:
    """Number of pruned weights that are no longer exactly zero."""
    count = 0
    for name, mask in get_masks(model).items():
        weight = model.get_submodule(name).weight
        count += int((weight.detach()[~mask] != 0).sum())
    return count


def _rezero(model: nn.Module) -> None:
    with torch.no_grad():
        for name, mask in get_masks(model).items():
            model.get_submodule(name).weight.masked_fill_(~mask, 0.0)


Plan = Callable[[nn.Module, int], Target]


def _check_plan(cfg: PruneConfig, plan: Plan | None) -> None:
    if (cfg.method is PruneMethod.AUTO) != (plan is not None):
        raise ConfigError(
            "iterative_prune_: method 'auto' needs a plan (e.g. SensitivityPlanner(cfg, evaluate, "
            f"reference_accuracy)) and other methods take none; got method {cfg.method.value!r} with plan={plan!r}"
        )


def prune_round_(
    model: nn.Module,
    cfg: PruneConfig,
    round_index: int,
    evaluate: Callable[[nn.Module], float] | None = None,
    plan: Plan | None = None,
) -> dict[str, Any]:
    """The pruning half of round ``round_index`` (0-based): prune to the round's target and return the
    round's history entry so far (``round``, ``target``, and with ``evaluate`` ``accuracy_pruned``).

    ``plan(model, round_index)``, required by method ``"auto"`` (e.g. a
    :class:`~deepcompress.prune.auto.SensitivityPlanner`), returns the round's per-layer sparsity
    targets from the model as it stands; they are applied exactly (method ``"sparsity"``).
    """
    _check_plan(cfg, plan)
    entry: dict[str, Any] = {"round": round_index + 1}
    if plan is not None:
        target = plan(model, round_index)
        prune_(model, replace(cfg, method=PruneMethod.SPARSITY, sparsity=target, rounds=1), 0)
    else:
        target = cfg.target(round_index)
        prune_(model, cfg, round_index)
    entry["target"] = dict(target) if not isinstance(target, float) else target
    if evaluate is not None:
        entry["accuracy_pruned"] = float(evaluate(model))
    return entry


def finish_round_(model: nn.Module, entry: dict[str, Any], evaluate: Callable[[nn.Module], float] | None = None) -> dict[str, Any]:
    """Close a round after retraining: re-zero (with a warning) any pruned weight the retraining revived,
    so the model and its reported accuracy always match the masks, and complete ``entry`` with ``kept``,
    ``numel``, ``kept_pct`` (all weight layers), ``layers`` (the :func:`sparsity_report` rows) and, with
    ``evaluate``, ``accuracy``. Returns ``entry``."""
    revived = _revived(model)
    if revived:
        warnings.warn(
            f"retraining in round {entry['round']} revived {revived} pruned weights; they were reset to 0. "
            "Call deepcompress.prune.keep_pruned_zero(optimizer, model) in the retrain callback",
            RuntimeWarning,
            stacklevel=2,
        )
        _rezero(model)
    report = sparsity_report(model)
    entry.update({k: report[-1][k] for k in ("kept", "numel", "kept_pct")}, layers=report[:-1])
    if evaluate is not None:
        entry["accuracy"] = float(evaluate(model))
    return entry


def iterative_prune_(
    model: nn.Module,
    cfg: PruneConfig,
    retrain: Callable[[nn.Module, int], None],
    evaluate: Callable[[nn.Module], float] | None = None,
    progress: bool = True,
    plan: Plan | None = None,
) -> list[dict[str, Any]]:
    """Run ``cfg.rounds`` rounds of :func:`prune_round_`, ``retrain(model, round_index)`` and
    :func:`finish_round_`; returns the history (one entry per round).

    ``retrain`` trains the model in place for the round (``cfg.epochs_per_round`` epochs at the original
    learning rate times ``cfg.lr_factor``, with ``cfg.weight_decay``); it must keep pruned weights at
    zero, normally by calling :func:`keep_pruned_zero` on the optimizer it builds. ``evaluate`` returns
    an accuracy; when given, it is measured after pruning and after retraining. A caller that needs
    checkpoints between the halves of a round (the pipeline) calls the two functions itself.
    """
    _check_plan(cfg, plan)
    history: list[dict[str, Any]] = []
    for round_index in progress_bar(range(cfg.rounds), desc="prune rounds", enabled=progress):
        entry = prune_round_(model, cfg, round_index, evaluate, plan)
        retrain(model, round_index)
        history.append(finish_round_(model, entry, evaluate))
    return history
