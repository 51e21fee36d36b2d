"""Iterative prune/retrain rounds on a tiny model with a toy retrain callback."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepcompress.prune import PruneConfig, get_masks, iterative_prune_, keep_pruned_zero
from deepcompress.prune.masks import count_to_prune

G = torch.Generator().manual_seed(3)
X = torch.randn(256, 6, generator=G)
Y = (X[:, 0] + X[:, 1] > 0).long()


def model() -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 2))


def accuracy(m: nn.Module) -> float:
    with torch.no_grad():
        return float((m(X).argmax(1) == Y).float().mean())


def retrain_with_hook(m: nn.Module, round_index: int) -> None:
    optimizer = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    keep_pruned_zero(optimizer, m)
    for _ in range(30):
        optimizer.zero_grad()
        F.cross_entropy(m(X), Y).backward()
        optimizer.step()


def test_iterative_schedule_ramps_and_records_history() -> None:
    net = model()
    retrain_with_hook(net, -1)  # a trained starting point
    cfg = PruneConfig(method="sparsity", sparsity=0.9375, rounds=4)  # keep 1/2, 1/4, 1/8, 1/16
    snapshots: list[dict[str, torch.Tensor]] = []

    def retrain(m: nn.Module, round_index: int) -> None:
        snapshots.append({n: mask.clone() for n, mask in get_masks(m).items()})
        retrain_with_hook(m, round_index)

    history = iterative_prune_(net, cfg, retrain, evaluate=accuracy, progress=False)
    assert [h["round"] for h in history] == [1, 2, 3, 4]
    assert [h["target"] for h in history] == pytest.approx([0.5, 0.75, 0.875, 0.9375])
    kept = [h["kept"] for h in history]
    assert kept == sorted(kept, reverse=True) and len(set(kept)) == 4
    for before, after in zip(snapshots, snapshots[1:]):
        for name in before:
            assert not bool((after[name] & ~before[name]).any())
    final = history[-1]
    for row in final["layers"]:
        assert row["numel"] - row["kept"] == count_to_prune(0.9375, row["numel"])
    assert all(0.0 <= h["accuracy_pruned"] <= 1.0 and 0.0 <= h["accuracy"] <= 1.0 for h in history)
    assert final["accuracy"] == accuracy(net)
    assert final["accuracy"] > 0.8  # retraining recovers this easy task at 1/16 of the weights


def test_schedule_without_evaluate_has_no_accuracy() -> None:
    history = iterative_prune_(model(), PruneConfig(rounds=2), lambda m, r: None, progress=False)
    assert len(history) == 2 and "accuracy" not in history[0] and "accuracy_pruned" not in history[0]


def test_revived_weights_are_reset_with_a_warning() -> None:
    net = model()

    def careless(m: nn.Module, round_index: int) -> None:
        with torch.no_grad():
            for p in m.parameters():
                p.add_(1.0)

    with pytest.warns(RuntimeWarning, match=r"retraining in round 1 revived \d+ pruned weights; they were reset to 0"):
        iterative_prune_(net, PruneConfig(method="sparsity", sparsity=0.5), careless, progress=False)
    for name, mask in get_masks(net).items():
        assert torch.all(net.get_submodule(name).weight[~mask] == 0)
