"""Pruning masks: the paper's std threshold against a hand computation, exact counts, ties, global."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from deepcompress.prune import global_masks, sparsity_mask, std_mask
from deepcompress.prune.masks import count_to_prune


def test_std_mask_matches_hand_computation() -> None:
    w = torch.tensor([[-3.0, -1.0, 0.5], [-0.5, 1.0, 3.0]])
    # mean 0, population variance (9 + 1 + 0.25 + 0.25 + 1 + 9) / 6
    std = math.sqrt(20.5 / 6)
    assert 0.5 * std == pytest.approx(0.92421, abs=1e-5)
    keep_half = std_mask(w, 0.5)
    assert keep_half.tolist() == [[True, True, False], [False, True, True]]
    keep_one = std_mask(w, 1.0)
    assert keep_one.tolist() == [[True, False, False], [False, False, True]]
    assert std_mask(w, 0.0).all()


def test_std_mask_never_revives_and_reapplying_prunes_nothing_more() -> None:
    w = torch.tensor([-3.0, -1.0, 0.5, -0.5, 1.0, 3.0])
    previous = torch.tensor([True, True, True, True, True, False])
    assert std_mask(w, 0.0, previous).tolist() == previous.tolist()
    first = std_mask(w, 0.5)
    pruned = w.masked_fill(~first, 0.0)  # zero-mean layer: its std drops once weights are zeroed
    assert torch.equal(std_mask(pruned, 0.5, first), first)


def test_sparsity_mask_breaks_ties_by_position() -> None:
    w = torch.tensor([0.5, -0.5, 0.5, 1.0, -0.1])
    assert sparsity_mask(w, 0.4).tolist() == [False, True, True, True, False]
    assert sparsity_mask(w, 0.6).tolist() == [False, False, True, True, False]


def test_count_rounds_half_up() -> None:
    assert count_to_prune(0.25, 10) == 3
    assert count_to_prune(0.24, 10) == 2
    assert count_to_prune(0.0, 10) == 0
    assert count_to_prune(0.999, 10) == 10


def test_sparsity_mask_keeps_previous_pruning_when_target_is_lower() -> None:
    w = torch.arange(1.0, 11.0)
    previous = torch.ones(10, dtype=torch.bool)
    previous[[2, 7, 9]] = False  # includes the largest weight
    mask = sparsity_mask(w, 0.1, previous)
    assert mask.tolist() == previous.tolist()
    mask = sparsity_mask(w, 0.5, previous)
    assert (~mask).nonzero().flatten().tolist() == [0, 1, 2, 7, 9]


def test_global_masks_share_one_threshold() -> None:
    a = torch.tensor([0.1, 5.0, 0.2])
    b = torch.tensor([[0.3, -0.05], [4.0, 0.15]])
    masks = global_masks({"a": a, "b": b}, 0.5)  # round(3.5) = 4 of 7 weights
    assert masks["a"].tolist() == [False, True, False]
    assert masks["b"].tolist() == [[True, False], [True, False]]
    again = global_masks({"a": a, "b": b}, 0.2, previous=masks)  # lower target: nothing comes back
    assert all(torch.equal(again[k], masks[k]) for k in masks)


def test_masks_reject_bad_input() -> None:
    with pytest.raises(ValueError, match=r"expected sparsity in \[0, 1\), got 1.0"):
        sparsity_mask(torch.ones(3), 1.0)
    with pytest.raises(ValueError, match="weights contain NaN or inf"):
        std_mask(torch.tensor([1.0, float("nan")]), 1.0)
    with pytest.raises(TypeError, match="expected a floating-point weight tensor, got dtype torch.int64"):
        sparsity_mask(torch.arange(4), 0.5)
    with pytest.raises(ValueError, match=r"expected a bool mask of shape \(3,\), got torch.bool \(4,\)"):
        sparsity_mask(torch.ones(3), 0.5, torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="expected at least one weight tensor"):
        global_masks({}, 0.5)


@settings(max_examples=60, deadline=None)
@given(
    w=arrays(np.float32, st.integers(1, 60), elements=st.floats(-4, 4, width=32).map(lambda x: round(x, 1))),
    s=st.floats(0.0, 0.99),
    drop=st.integers(0, 10),
)
def test_sparsity_mask_prunes_exactly_the_smallest(w: np.ndarray, s: float, drop: int) -> None:
    weight = torch.from_numpy(w)
    previous = torch.ones(len(w), dtype=torch.bool)
    previous[: min(drop, len(w) - 1)] = False
    mask = sparsity_mask(weight, s, previous)
    expected = max(count_to_prune(s, len(w)), int((~previous).sum()))
    assert int((~mask).sum()) == expected
    assert not bool((mask & ~previous).any())  # subset of the previous mask
    fresh = sparsity_mask(weight, s)
    if (~fresh).any() and fresh.any():
        assert weight.abs()[~fresh].max() <= weight.abs()[fresh].min()


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=4),
    s=st.floats(0.0, 0.99),
    seed=st.integers(0, 1000),
)
def test_global_masks_prune_exact_total(sizes: list[int], s: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    weights = {f"l{i}": torch.randn(n, generator=g).round(decimals=1) for i, n in enumerate(sizes)}
    masks = global_masks(weights, s)
    total = sum(sizes)
    assert sum(int((~m).sum()) for m in masks.values()) == count_to_prune(s, total)
    kept = torch.cat([weights[k].abs()[masks[k]] for k in weights])
    pruned = torch.cat([weights[k].abs()[~masks[k]] for k in weights])
    if len(kept) and len(pruned):
        assert pruned.max() <= kept.min()
