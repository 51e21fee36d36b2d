"""Removing dead and unused units after pruning (deepcompress.prune.dead)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepcompress.models import build_model
from deepcompress.prune import get_masks, set_masks_
from deepcompress.prune.dead import remove_dead_units_


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@torch.no_grad()
def _kill(layer: nn.Module, units: list[int], columns: list[int] = ()) -> None:
    layer.weight[units] = 0.0
    if columns:
        layer.weight[:, list(columns)] = 0.0


@torch.no_grad()
def _biases_away_from_zero(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None:
            m.bias.copy_(torch.linspace(-0.5, 0.5, m.bias.numel())[torch.randperm(m.bias.numel())])


def test_lenet300_outputs_unchanged_and_units_freed() -> None:
    torch.manual_seed(0)
    model = build_model("lenet300").eval()
    _biases_away_from_zero(model)
    _kill(model.fc1, [3, 7, 250], columns=[5, 6])
    _kill(model.fc2, [0, 99], columns=[11, 12])  # fc1 units 11 and 12 become unused
    x = torch.randn(16, 784)
    before = model(x)
    report = remove_dead_units_(model, x)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)
    assert model.fc2.weight[:, [3, 7, 250]].eq(0).all() and model.fc1.bias[[3, 7, 250]].eq(0).all()
    assert model.fc1.weight[[11, 12]].eq(0).all() and model.fc1.bias[[11, 12]].eq(0).all()
    assert model.fc3.weight[:, [0, 99]].eq(0).all() and model.fc2.bias[[0, 99]].eq(0).all()
    assert report["layers"]["fc1"]["units_removed"] == 5 and report["layers"]["fc2"]["units_removed"] == 2
    assert report["layers"]["fc1"]["weights_freed"] == 2 * 784 - 2 * 2  # rows 11, 12 (columns 5, 6 already 0)
    assert report["weights_freed"] == sum(r["weights_freed"] for r in report["layers"].values())
    assert "fc3" in report["skipped"] and "model output" in report["skipped"]["fc3"]


def test_lenet5_conv_filters_fold_through_pool_and_flatten() -> None:
    torch.manual_seed(1)
    model = build_model("lenet5").eval()
    _biases_away_from_zero(model)
    _kill(model.conv1, [2, 9])  # no activation after conv1: the constant is the bias itself
    _kill(model.conv2, [4, 30])  # read by fc1 as 16 columns each (4x4 after pooling)
    _kill(model.fc1, [17])
    x = torch.randn(8, 1, 28, 28)
    before = model(x)
    report = remove_dead_units_(model, x)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)
    assert model.conv2.weight[:, [2, 9]].eq(0).all()
    assert model.fc1.weight[:, 4 * 16 : 5 * 16].eq(0).all() and model.fc1.weight[:, 30 * 16 : 31 * 16].eq(0).all()
    assert model.fc1.weight[:, 5 * 16 : 6 * 16].ne(0).any()
    assert model.fc2.weight[:, 17].eq(0).all()
    assert [report["layers"][n]["units_removed"] for n in ("conv1", "conv2", "fc1")] == [2, 2, 1]
    assert report["iterations"] >= 2


def test_masks_follow_the_zeroed_weights() -> None:
    torch.manual_seed(2)
    model = build_model("lenet300").eval()
    _biases_away_from_zero(model)
    _kill(model.fc1, [1, 2])
    _kill(model.fc2, [], columns=[40])
    set_masks_(model, {n: m.weight != 0 for n, m in model.named_modules() if isinstance(m, nn.Linear)})
    remove_dead_units_(model, torch.randn(4, 784))
    for name, mask in get_masks(model).items():
        assert torch.equal(mask, dict(model.named_modules())[name].weight != 0), name
    assert not get_masks(model)["fc1"][40].any() and not get_masks(model)["fc2"][:, [1, 2]].any()


def test_nothing_dead_leaves_the_model_untouched() -> None:
    torch.manual_seed(3)
    for name, x in (("lenet300", torch.randn(2, 784)), ("lenet5", torch.randn(2, 1, 28, 28))):
        model = build_model(name).eval()
        state = _state(model)
        report = remove_dead_units_(model, x)
        assert _same(state, _state(model))
        assert report["units_removed"] == 0 and report["weights_freed"] == 0 and report["iterations"] == 1


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(8, 6), nn.Linear(6, 6), nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        return self.fc3(h + self.fc2(h))


def test_residual_and_batchnorm_are_refused_and_left_unchanged() -> None:
    torch.manual_seed(4)
    residual = _Residual().eval()
    bn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).eval()
    for model, x in ((residual, torch.randn(3, 8)), (bn, torch.randn(3, 1, 8, 8))):
        layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        _kill(layers[0], [1])
        _kill(layers[-1], [], columns=[0])
        state = _state(model)
        report = remove_dead_units_(model, x)
        assert _same(state, _state(model))
        assert report["units_removed"] == 0 and report["weights_freed"] == 0
    assert "read by 2 nodes" in remove_dead_units_(residual, torch.randn(3, 8))["skipped"]["fc1"]
    assert "batch_norm" in remove_dead_units_(bn, torch.randn(3, 1, 8, 8))["skipped"]["0"]


def test_padded_conv_consumer_folds_only_zero_constants() -> None:
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1)).eval()
    with torch.no_grad():
        model[0].bias.copy_(torch.tensor([0.3, -0.2, 0.1, 0.4]))
    _kill(model[0], [0, 1])  # relu(0.3) = 0.3 meets the zero padding; relu(-0.2) = 0 folds exactly
    x = torch.randn(2, 2, 9, 9)
    before = model(x)
    report = remove_dead_units_(model, x)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)
    assert model[2].weight[:, 1].eq(0).all() and model[2].weight[:, 0].ne(0).any()
    assert report["layers"]["0"]["units_removed"] == 1 and "zero padding" in report["skipped"]["0"]


def test_padded_average_pool_folds_only_zero_constants() -> None:
    torch.manual_seed(8)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.AvgPool2d(2, padding=1), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    with torch.no_grad():
        model[0].bias.copy_(torch.tensor([0.5, -0.5, 0.2]))
    _kill(model[0], [0, 1])
    x = torch.randn(2, 1, 8, 8)
    before = model(x)
    report = remove_dead_units_(model.eval(), x)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)
    assert model[4].weight[:, 16:32].eq(0).all() and model[4].weight[:, :16].ne(0).any()
    assert report["layers"]["0"]["units_removed"] == 1


def test_user_sequential_cnn_with_dropout_and_tanh() -> None:
    torch.manual_seed(6)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 3), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.3),
        nn.Linear(6 * 5 * 5, 12), nn.Sigmoid(), nn.Linear(12, 4),
    ).eval()
    _biases_away_from_zero(model)
    _kill(model[0], [5])
    _kill(model[5], [0, 11])
    x = torch.randn(5, 1, 12, 12)
    before = model(x)
    report = remove_dead_units_(model, x)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)
    assert model[5].weight[:, 125:150].eq(0).all() and model[7].weight[:, [0, 11]].eq(0).all()
    assert report["layers"]["0"]["units_removed"] == 1 and report["layers"]["5"]["units_removed"] == 2


def test_consumer_without_bias_keeps_nonzero_constants() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2, bias=False)).eval()
    with torch.no_grad():
        model[0].bias.copy_(torch.tensor([1.0, 0.0, 2.0]))
    _kill(model[0], [0, 1])
    x = torch.randn(3, 4)
    before = model(x)
    report = remove_dead_units_(model, x)
    torch.testing.assert_close(model(x), before)
    assert model[1].weight[:, 1].eq(0).all() and model[1].weight[:, 0].ne(0).all()
    assert report["layers"]["0"]["units_removed"] == 1 and "no bias" in report["skipped"]["0"]


def test_min_weights_prunes_thin_units_and_their_masks() -> None:
    torch.manual_seed(7)
    model = build_model("lenet300").eval()
    with torch.no_grad():
        model.fc1.weight[:10, 3:] = 0.0  # ten units keep 3 weights
    set_masks_(model, {"fc1": model.fc1.weight != 0})
    report = remove_dead_units_(model, torch.randn(2, 784), min_weights=4)
    assert report["layers"]["fc1"]["units_pruned"] == 10 and report["layers"]["fc1"]["units_removed"] == 10
    assert model.fc1.weight[:10].eq(0).all() and not get_masks(model)["fc1"][:10].any()
    assert model.fc2.weight[:, :10].eq(0).all()
    with pytest.raises(ValueError, match="expected min_weights to be an int >= 0, got -1"):
        remove_dead_units_(model, torch.randn(2, 784), min_weights=-1)


def test_untraceable_model_is_reported_and_untouched() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.fc1(x)
            if h.sum() > 0:  # data-dependent control flow: torch.export refuses it
                h = -h
            return self.fc2(h)

    model = Branchy()
    state = _state(model)
    report = remove_dead_units_(model, torch.randn(2, 4))
    assert _same(state, _state(model)) and "torch.export could not trace" in report["skipped"]["<model>"]
