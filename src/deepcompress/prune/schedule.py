"""Iterative pruning: prune, retrain, repeat (Han et al. 2015, section 3.3).

Iterative pruning reaches higher compression than one-shot pruning at the same accuracy (AlexNet 9x
against 5x). Each round prunes to the round's ramped target (see :class:`PruneConfig`) and then hands
the model to a caller-supplied ``retrain`` callback; the training loop itself lives elsewhere
(``deepcompress.train``), so this module only orchestrates.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from deepcompress.prune.apply import get_masks, prune_, sparsity_report
from deepcompress.errors import ConfigError
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


def iterative_prune_(
    model: nn.Module,
    cfg: PruneConfig,
    retrain: Callable[[nn.Module, int], None],
    evaluate: Callable[[nn.Module], float] | None = None,
    progress: bool = True,
    start_round: int = 0,
    start_pruned: bool = False,
    on_round_end: Callable[[int, list[dict[str, Any]]], None] | None = None,
    plan: Callable[[nn.Module, int], Target] | None = None,
) -> list[dict[str, Any]]:
    """Run ``cfg.rounds`` rounds of :func:`prune_` then ``retrain(model, round_index)``; returns the history.

    ``retrain`` trains the model in place for the round (``cfg.epochs_per_round`` epochs at the original
    learning rate times ``cfg.lr_factor``, with ``cfg.weight_decay``); it must keep pruned weights at
    zero, normally by calling :func:`keep_pruned_zero` on the optimizer it builds. Weights that it
    nevertheless revives are re-zeroed with a warning, so the model and its reported accuracy always
    match the masks. ``evaluate`` returns an accuracy; when given, it is measured after pruning and
    after retraining. Each history entry: ``round`` (1-based), ``target``, ``kept``, ``numel``,
    ``kept_pct`` (all selected and unselected compressible layers), ``layers`` (the per-layer
    :func:`sparsity_report` rows) and, with ``evaluate``, ``accuracy_pruned`` and ``accuracy``.

    Resuming an interrupted run: ``start_round`` skips the rounds already done (their masks and weights
    are in ``model``); ``start_pruned`` says round ``start_round`` was already pruned and only its
    retraining is left (re-pruning would be wrong for the std rule, whose threshold moves with
    retraining). ``on_round_end(rounds_done, history)`` is called after each round, for checkpoints.

    ``plan(model, round_index)``, required by method ``"auto"`` (e.g. a
    :class:`~deepcompress.prune.auto.SensitivityPlanner`), returns the round's per-layer sparsity
    targets from the model as it stands; they are applied exactly (method ``"sparsity"``).
    """
    if (cfg.method is PruneMethod.AUTO) != (plan is not None):
        raise ConfigError(
            "iterative_prune_: method 'auto' needs a plan (e.g. SensitivityPlanner(cfg, evaluate, "
            f"reference_accuracy)) and other methods take none; got method {cfg.method.value!r} with plan={plan!r}"
        )
    history: list[dict[str, Any]] = []
    for round_index in tqdm(range(start_round, cfg.rounds), desc="prune rounds", disable=not progress):
        entry: dict[str, Any] = {"round": round_index + 1}
        target: Target | None = None
        if not (start_pruned and round_index == start_round):
            if plan is not None:
                target = plan(model, round_index)
                prune_(model, replace(cfg, method=PruneMethod.SPARSITY, sparsity=target, rounds=1), 0)
            else:
                prune_(model, cfg, round_index)
            if evaluate is not None:
                entry["accuracy_pruned"] = float(evaluate(model))
        if plan is None:
            target = cfg.target(round_index)
        if target is not None:
            entry["target"] = dict(target) if not isinstance(target, float) else target
        retrain(model, round_index)
        revived = _revived(model)
        if revived:
            warnings.warn(
                f"retraining in round {round_index + 1} revived {revived} pruned weights; they were reset to 0. "
                "Call deepcompress.prune.keep_pruned_zero(optimizer, model) in the retrain callback",
                RuntimeWarning,
                stacklevel=2,
            )
            _rezero(model)
        report = sparsity_report(model)
        entry.update({k: report[-1][k] for k in ("kept", "numel", "kept_pct")}, layers=report[:-1])
        if evaluate is not None:
            entry["accuracy"] = float(evaluate(model))
        history.append(entry)
        if on_round_end is not None:
            on_round_end(round_index + 1, history)
    return history

