"""In-place pruning: mask buffers, masks that only shrink, pruned weights held at exactly zero through
SGD / Adam / AdamW with weight decay, gradient masking, the Weights% report and dropout adjustment."""

from __future__ import annotations

import math
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

from deepcompress.errors import ConfigError
from deepcompress.prune import (
    PruneConfig,
    adjust_dropout_,
    get_masks,
    keep_pruned_zero,
    mask_gradients_,
    prune_,
    set_masks_,
    sparsity_report,
)


def mlp(dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(10, 20), nn.ReLU(), nn.Dropout(dropout), nn.Linear(20, 20), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(20, 3),
    )


def convnet() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def pruned_values(model: nn.Module) -> torch.Tensor:
    return torch.cat([model.get_submodule(n).weight.detach()[~m] for n, m in get_masks(model).items()])


def test_prune_registers_bool_buffers_and_zeroes_weights() -> None:
    model = convnet()
    biases = [m.bias.detach().clone() for m in (model[0], model[3])]
    prune_(model, PruneConfig(method="sparsity", sparsity=0.5))
    masks = get_masks(model)
    assert list(masks) == ["0", "3"]
    state = model.state_dict()
    for name, mask in masks.items():
        assert state[f"{name}.weight_mask"].dtype == torch.bool
        assert int((~mask).sum()) == round(0.5 * mask.numel())
        weight = model.get_submodule(name).weight.detach()
        assert torch.all(weight[~mask] == 0) and not torch.signbit(weight[~mask]).any()  # +0.0, not -0.0
    assert torch.equal(model[0].bias, biases[0]) and torch.equal(model[3].bias, biases[1])  # biases kept


def test_std_method_uses_each_layers_own_std() -> None:
    model = mlp()
    weights = {n: model.get_submodule(n).weight.detach().clone() for n in ("0", "3", "6")}
    prune_(model, PruneConfig(quality={"6": 0.5, "*": 1.0}, adjust_dropout=False))
    for name, w in weights.items():
        quality = 0.5 if name == "6" else 1.0
        expected = w.abs() >= quality * w.std(correction=0)
        assert torch.equal(get_masks(model)[name], expected)


def test_global_method_prunes_the_overall_target() -> None:
    model = mlp()
    prune_(model, PruneConfig(method="global", sparsity=0.7))
    total = sparsity_report(model)[-1]
    assert total["numel"] - total["kept"] == round(0.7 * total["numel"])


def test_masks_only_shrink_across_rounds() -> None:
    model = mlp()
    cfg = PruneConfig(method="sparsity", sparsity=0.9, rounds=3)
    previous = None
    for r in range(3):
        prune_(model, cfg, round_index=r)
        masks = {n: m.clone() for n, m in get_masks(model).items()}
        if previous is not None:
            for name in masks:
                assert not bool((masks[name] & ~previous[name]).any())
                assert int(masks[name].sum()) < int(previous[name].sum())
        with torch.no_grad():  # perturb survivors between rounds, as retraining would
            for name in masks:
                model.get_submodule(name).weight.mul_(torch.rand_like(model.get_submodule(name).weight))
        previous = masks
    prune_(model, PruneConfig(method="sparsity", sparsity=0.1))  # a lower target revives nothing
    assert all(torch.equal(get_masks(model)[n], previous[n]) for n in previous)


def test_patterns_select_layers() -> None:
    model = mlp()
    prune_(model, PruneConfig(method="sparsity", sparsity=0.5, patterns=("3",)))
    assert list(get_masks(model)) == ["3"]
    rows = {r["layer"]: r for r in sparsity_report(model)}
    assert rows["0"]["kept_pct"] == 100.0 and rows["3"]["kept_pct"] == 50.0


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 40) -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 10, generator=g), torch.randint(0, 3, (64,), generator=g)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


OPTIMIZERS: dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]] = {
    "sgd-momentum-wd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
    "sgd-nesterov": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam-wd": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    "adam-amsgrad": lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_pruned_weights_stay_exactly_zero_and_state_is_cleared(name: str) -> None:
    model = prune_(mlp(), PruneConfig(method="sparsity", sparsity=0.6))
    kept_before = {n: model.get_submodule(n).weight.detach()[m].clone() for n, m in get_masks(model).items()}
    optimizer = OPTIMIZERS[name](list(model.parameters()))
    keep_pruned_zero(optimizer, model)
    train_steps(model, optimizer)
    values = pruned_values(model)
    assert torch.all(values == 0.0) and not torch.signbit(values).any()
    for layer, mask in get_masks(model).items():
        weight = model.get_submodule(layer).weight
        state = optimizer.state[weight]
        per_weight = [v for v in state.values() if isinstance(v, torch.Tensor) and v.shape == weight.shape]
        assert per_weight, f"{name} keeps no per-weight state to check"
        for value in per_weight:
            assert torch.all(value[~mask] == 0)
            assert bool((value[mask] != 0).any())
        assert not torch.equal(weight.detach()[mask], kept_before[layer])  # the survivors did train


def test_without_the_hook_weight_decay_and_momentum_revive_pruned_weights() -> None:
    model = prune_(mlp(), PruneConfig(method="sparsity", sparsity=0.6))
    train_steps(model, OPTIMIZERS["sgd-momentum-wd"](list(model.parameters())), steps=3)
    assert bool((pruned_values(model) != 0).any())  # the failure keep_pruned_zero exists to prevent


def test_hook_handle_removes_the_hook() -> None:
    model = prune_(mlp(), PruneConfig(method="sparsity", sparsity=0.6))
    optimizer = OPTIMIZERS["sgd-momentum-wd"](list(model.parameters()))
    keep_pruned_zero(optimizer, model).remove()
    train_steps(model, optimizer, steps=3)
    assert bool((pruned_values(model) != 0).any())


def test_mask_gradients_zeroes_pruned_gradients() -> None:
    model = prune_(mlp(), PruneConfig(method="sparsity", sparsity=0.6))
    mask_gradients_(model)
    mask_gradients_(model)  # idempotent: replaces, does not stack
    x = torch.randn(8, 10)
    F.cross_entropy(model(x), torch.zeros(8, dtype=torch.long)).backward()
    for name, mask in get_masks(model).items():
        grad = model.get_submodule(name).weight.grad
        assert torch.all(grad[~mask] == 0) and bool((grad[mask] != 0).any())


def test_masks_travel_in_state_dict() -> None:
    model = prune_(mlp(), PruneConfig(method="sparsity", sparsity=0.6))
    state = model.state_dict()
    fresh = mlp()
    masks = {k.removesuffix(".weight_mask"): v for k, v in state.items() if k.endswith(".weight_mask")}
    set_masks_(fresh, masks)
    fresh.load_state_dict(state)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(ConfigError) as info:
        set_masks_(fresh, {"1": masks["0"]})
    assert str(info.value) == "mask for '1': expected the name of a weight layer, one of ['0', '3', '6']"
    with pytest.raises(ConfigError) as info:
        set_masks_(fresh, {"0": masks["3"]})
    assert str(info.value) == "mask for '0': expected a bool tensor of shape (20, 10), got torch.bool (20, 20)"


def test_sparsity_report_matches_masks() -> None:
    model = prune_(mlp(), PruneConfig(method="sparsity", sparsity={"6": 0.5, "*": 0.75}))
    rows = sparsity_report(model)
    assert [r["layer"] for r in rows] == ["0", "3", "6", "total"]
    assert [r["kept"] for r in rows] == [50, 100, 30, 180]
    assert rows[-1]["numel"] == 200 + 400 + 60
    assert rows[-1]["kept_pct"] == pytest.approx(100 * 180 / 660)


def test_dropout_adjustment_against_hand_computation() -> None:
    model = mlp(dropout=0.5)
    model[5].p = 0.4
    # Linear(10, 20): 200 connections, 150 pruned; Linear(20, 20): 400, 300 pruned
    prune_(model, PruneConfig(method="sparsity", sparsity=0.75))
    assert model[2].p == pytest.approx(0.5 * math.sqrt(50 / 200))
    assert model[5].p == pytest.approx(0.4 * math.sqrt(100 / 400))


def test_dropout_adjustment_compounds_over_rounds_to_the_dense_ratio() -> None:
    model = mlp(dropout=0.5)
    cfg = PruneConfig(method="sparsity", sparsity=0.75, rounds=2)
    prune_(model, cfg, round_index=0)  # keeps sqrt(1 - 0.75) = half: 100 of 200
    assert model[2].p == pytest.approx(0.5 * math.sqrt(100 / 200))
    prune_(model, cfg, round_index=1)
    assert model[2].p == pytest.approx(0.5 * math.sqrt(50 / 200))


def test_dropout_not_after_a_pruned_linear_is_untouched() -> None:
    model = nn.Sequential(nn.Dropout(0.3), nn.Linear(4, 4), nn.Conv2d(1, 1, 1), nn.Dropout(0.2))
    adjust_dropout_(model, {}, {"1": torch.zeros(4, 4, dtype=torch.bool), "2": torch.zeros(1, 1, 1, 1, dtype=torch.bool)})
    assert model[0].p == 0.3 and model[3].p == 0.2
    model = mlp(dropout=0.5)
    prune_(model, PruneConfig(method="sparsity", sparsity=0.75, adjust_dropout=False))
    assert model[2].p == 0.5


def test_no_prunable_layer_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        prune_(nn.Sequential(nn.ReLU(), nn.Dropout()), PruneConfig())
    assert str(info.value) == (
        "model Sequential has no weight layer; deepcompress compresses the weights of the layer kinds "
        "['linear', 'conv1d', 'conv2d', 'conv3d', 'embedding', 'embedding_bag', 'hf_conv1d'] "
        "(register a LayerHandler for other modules)"
    )


def test_pattern_matching_nothing_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        prune_(mlp(), PruneConfig(patterns=("conv*",)))
    assert str(info.value) == "layer pattern 'conv*' matches no weight layer; weight layers are ['0', '3', '6']"
    with pytest.raises(ConfigError) as info:
        prune_(mlp(), PruneConfig(quality={"fc9": 1.0, "*": 0.5}))
    assert str(info.value) == "prune.quality pattern 'fc9' matches no selected layer; selected layers are ['0', '3', '6']"
    with pytest.raises(ConfigError) as info:
        prune_(mlp(), PruneConfig(method="sparsity", sparsity={"0": 0.5}))
    assert str(info.value) == "no prune.sparsity given for layer '3': patterns ['0'] match nothing; add a '*' entry"


def test_torch_prune_utility_conflict_is_reported() -> None:
    model = mlp()
    torch_prune.l1_unstructured(model[0], "weight", amount=0.5)
    with pytest.raises(ConfigError, match=r"layer '0' is pruned with torch.nn.utils.prune"):
        prune_(model, PruneConfig())
    with pytest.raises(TypeError, match="prune_: expected a PruneConfig, got dict"):
        prune_(mlp(), {"sparsity": 0.5})  # type: ignore[arg-type]
