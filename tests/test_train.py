from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deepcompress.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from deepcompress.data import load_split
from deepcompress.errors import CheckpointError, ConfigError
from deepcompress.models import build_model
from deepcompress.train import TrainConfig, evaluate, fit, random_shift


def test_short_training_learns_the_synthetic_pattern(idx_dir: Path) -> None:
    train = load_split("mnist", "train", idx_dir).tensors(limit=2000)
    test = load_split("mnist", "test", idx_dir).tensors(limit=500)
    model = build_model("lenet300")
    before = evaluate(model, test)["accuracy"]
    history = fit(model, train, TrainConfig(epochs=2, lr=0.05, augment=False), progress=False)
    after = evaluate(model, test)
    assert len(history) == 2 and history[1]["loss"] < history[0]["loss"]
    assert after["accuracy"] > 0.9 > before
    assert after["n"] == 500 and after["error"] == pytest.approx(1 - after["accuracy"])


def test_training_is_deterministic_for_a_seed(idx_dir: Path) -> None:
    train = load_split("mnist", "train", idx_dir).tensors(limit=512)
    weights = []
    for _ in range(2):
        torch.manual_seed(123)
        model = build_model("lenet5")
        fit(model, train, TrainConfig(epochs=1, seed=7), progress=False)
        weights.append(model.fc2.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])


def test_random_shift_moves_whole_pixels() -> None:
    image = torch.full((1, 1, 28, 28), -1.0)
    image[0, 0, 10, 12] = 5.0
    shifted = random_shift(image, 2, -1.0, torch.Generator().manual_seed(0))
    assert (shifted == 5.0).sum() == 1 and (shifted == -1.0).sum() == 28 * 28 - 1
    row, col = [int(i) for i in (shifted[0, 0] == 5.0).nonzero()[0]]
    assert abs(row - 10) <= 2 and abs(col - 12) <= 2


def test_train_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match=r"train.optimizer: expected one of \['sgd', 'adam'\], got 'rmsprop'"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ConfigError, match=r"train: unknown keys \['lrr'\]"):
        TrainConfig.from_dict({"lrr": 0.1})


def test_checkpoint_round_trip_without_pickle(tmp_path: Path) -> None:
    model = build_model("lenet300")
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path, {"model": "lenet300", "dataset": "mnist", "seed": 3})
    loaded, metadata = load_checkpoint(path)
    assert metadata == {"model": "lenet300", "dataset": "mnist", "seed": 3}
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert b"pickle" not in path.read_bytes()[:200]


def test_checkpoint_for_another_model_names_the_first_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(build_model("lenet300"), path, {"model": "lenet300"})
    with pytest.raises(CheckpointError, match="holds a 'lenet300' model, expected 'lenet5'"):
        load_checkpoint(path, expect_model="lenet5")
    tensors, _ = read_checkpoint(path)
    from deepcompress.checkpoint import load_state_strict

    with pytest.raises(CheckpointError, match=r"tensor 'fc1.weight' has shape \(300, 784\), LeNet5 expects \(500, 800\)"):
        load_state_strict(build_model("lenet5"), {**tensors, "conv1.weight": torch.zeros(20, 1, 5, 5), "conv1.bias": torch.zeros(20), "conv2.weight": torch.zeros(50, 20, 5, 5), "conv2.bias": torch.zeros(50)}, "x")


def test_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"not safetensors at all")
    with pytest.raises(CheckpointError, match="is not a safetensors checkpoint"):
        load_checkpoint(path)
