"""Automatic pruning (prune/auto.py): per-round sparsity plans from sensitivity scans, cubic ramps, the
``auto`` method's need for a plan. Automatic bit widths are in test_quantize_auto.py."""

from __future__ import annotations

import pytest
import torch

from conftest import agreement, two_layer_net
from deepcompress.errors import ConfigError
from deepcompress.prune import (
    PruneConfig,
    SensitivityPlanner,
    get_masks,
    iterative_prune_,
    plan_sparsity,
    prune_,
)


def test_cubic_ramp_prunes_most_in_the_first_rounds() -> None:
    cfg = PruneConfig(method="sparsity", sparsity=0.96, rounds=4, ramp="cubic")
    targets = [cfg.target(r) for r in range(4)]
    assert targets == pytest.approx([0.96 * (1 - (1 - p) ** 3) for p in (0.25, 0.5, 0.75, 1.0)])
    steps = [b - a for a, b in zip([0.0] + targets, targets)]
    assert steps == sorted(steps, reverse=True) and targets[-1] == pytest.approx(0.96)
    assert PruneConfig(quality=2.0, rounds=2, ramp="cubic").target(0) == pytest.approx(2.0 * (1 - 0.5**3))
    with pytest.raises(ConfigError, match=r"prune.ramp: expected one of \['geometric', 'cubic'\], got 'linear'"):
        PruneConfig(ramp="linear")


def test_auto_method_needs_a_plan_and_has_no_fixed_target() -> None:
    cfg = PruneConfig(method="auto", rounds=2)
    with pytest.raises(ConfigError, match="no fixed target"):
        cfg.target(0)
    with pytest.raises(ConfigError, match="no fixed target"):
        prune_(two_layer_net(), cfg)
    with pytest.raises(ConfigError, match="method 'auto' needs a plan"):
        iterative_prune_(two_layer_net(), cfg, lambda m, r: None, progress=False)
    with pytest.raises(ConfigError, match="prune.budget: expected a number in \\[0, 1\\)"):
        PruneConfig(method="auto", budget=1.5)


def test_plan_spends_the_budget_on_the_tolerant_layer() -> None:
    scan = {
        "fractions": [0.0, 0.5, 0.9, 0.95],
        "baseline": 0.99,
        "layers": {
            "tolerant": {"kind": "linear", "accuracy": [0.99, 0.99, 0.985, 0.97]},
            "sensitive": {"kind": "linear", "accuracy": [0.99, 0.90, 0.50, 0.20]},
        },
    }
    sizes = {"tolerant": 10_000, "sensitive": 10_000}
    plan = plan_sparsity(scan, sizes, {"tolerant": 0.0, "sensitive": 0.0}, budget=0.01)
    assert plan == {"tolerant": 0.9, "sensitive": 0.0}
    # a second round starts from what is already pruned: only fractions above it are options
    assert plan_sparsity(scan, sizes, {"tolerant": 0.9, "sensitive": 0.0}, budget=0.12) == {"tolerant": 0.95, "sensitive": 0.5}


def test_planner_prunes_gradually_and_masks_only_shrink() -> None:
    net = two_layer_net()
    cfg = PruneConfig(method="auto", rounds=3, budget=0.15, tolerance=0.5)
    planner = SensitivityPlanner(cfg, agreement, agreement(net))
    snapshots: list[dict[str, torch.Tensor]] = []
    history = iterative_prune_(
        net, cfg, lambda m, r: snapshots.append({n: k.clone() for n, k in get_masks(m).items()}),
        evaluate=agreement, progress=False, plan=planner,
    )
    assert sorted(planner.rounds) == [0, 1, 2] and [h["round"] for h in history] == [1, 2, 3]
    for before, after in zip(snapshots, snapshots[1:]):
        for name in before:
            assert not bool((after[name] & ~before[name]).any())
    for entry in history:  # the planned target is applied exactly
        for row in entry["layers"]:
            assert row["kept"] == row["numel"] - round(entry["target"][row["layer"]] * row["numel"])
    assert history[-1]["kept"] < history[0]["numel"]  # something was pruned


def test_tolerance_caps_each_round_budget_by_the_accuracy_left() -> None:
    net = two_layer_net()
    cfg = PruneConfig(method="auto", rounds=4, budget=0.3, tolerance=0.1)
    planner = SensitivityPlanner(cfg, agreement, reference_accuracy=1.0)
    iterative_prune_(net, cfg, lambda m, r: None, progress=False, plan=planner)  # no retraining: losses add up
    budgets = [planner.rounds[r]["budget"] for r in range(4)]
    for r, budget in enumerate(budgets):
        assert budget == pytest.approx(max(0.0, min(0.3, planner.rounds[r]["validation_accuracy"] - 0.9)))
    assert budgets[0] == pytest.approx(0.1) and budgets[-1] < 0.1
    with pytest.raises(ConfigError, match="prune.tolerance"):
        PruneConfig(method="auto", tolerance=-0.1)


def test_recovery_lets_a_round_spend_a_multiple_of_the_tolerance_left() -> None:
    net = two_layer_net()
    cfg = PruneConfig(method="auto", rounds=1, budget=0.3, tolerance=0.05, recovery=4.0)
    planner = SensitivityPlanner(cfg, agreement, reference_accuracy=1.0)
    planner(net, 0)
    left = planner.rounds[0]["validation_accuracy"] - 0.95
    assert planner.rounds[0]["budget"] == pytest.approx(min(0.3, 4.0 * left))
    assert planner.rounds[0]["budget"] > left
    with pytest.raises(ConfigError, match="prune.recovery"):
        PruneConfig(method="auto", recovery=0.5)
