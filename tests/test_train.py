from __future__ import annotations

import copy
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from deepcompress.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from deepcompress.data import load_split
from deepcompress.errors import CheckpointError, ConfigError
from deepcompress.models import build_model
from deepcompress.train import TrainConfig, Trainer, background_value, evaluate, fit, random_shift


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
    from deepcompress.checkpoint import load_state_into

    with pytest.raises(CheckpointError, match=r"tensor 'fc1.weight' has shape \(300, 784\), LeNet5 expects \(500, 800\)"):
        load_state_into(build_model("lenet5"), {**tensors, "conv1.weight": torch.zeros(20, 1, 5, 5), "conv1.bias": torch.zeros(20), "conv2.weight": torch.zeros(50, 20, 5, 5), "conv2.bias": torch.zeros(50)}, "x")


def test_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"not safetensors at all")
    with pytest.raises(CheckpointError, match="is not a safetensors checkpoint"):
        load_checkpoint(path)


# --- any data, any task ---------------------------------------------------------------------------


def blobs(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three separable classes of 8-dimensional points."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 8, generator=generator) * 0.5
    x[torch.arange(n), y] += 2.0
    return x, y


def small_model(dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))


FAST = TrainConfig(epochs=4, lr=0.1, batch_size=16)


def test_fit_on_a_dataset_reduces_the_loss() -> None:
    x, y = blobs()
    model = small_model()
    history = fit(model, TensorDataset(x, y), FAST, progress=False)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["train_accuracy"] > 0.9
    assert evaluate(model, TensorDataset(x, y), batch_size=7) == evaluate(model, (x, y))


def test_fit_on_a_dataloader_uses_it_as_it_is() -> None:
    x, y = blobs()
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    history = fit(small_model(), loader, FAST, progress=False)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]


def test_a_dataset_gives_the_same_run_as_its_tensors_and_with_workers() -> None:
    x, y = blobs()
    cfg = replace(FAST, augment=False, epochs=2)
    runs = []
    for data, workers in (((x, y), 0), (TensorDataset(x, y), 0), (TensorDataset(x, y), 2)):
        model = small_model(dropout=0.2)
        runs.append((fit(model, data, replace(cfg, workers=workers), progress=False), model.state_dict()))
    for history, state in runs[1:]:
        assert history == runs[0][0]
        assert all(torch.equal(state[k], runs[0][1][k]) for k in state)


def test_resuming_on_a_dataset_continues_exactly() -> None:
    x, y = blobs()
    data, cfg = TensorDataset(x, y), replace(FAST, epochs=2, optimizer="adam", lr=0.01)
    uninterrupted = small_model(dropout=0.3)
    fit(uninterrupted, data, cfg, progress=False)

    first = small_model(dropout=0.3)
    trainer = Trainer(first, data, cfg, progress=False)
    trainer.run_epoch(0)
    saved = {"weights": copy.deepcopy(first.state_dict()), "optimizer": copy.deepcopy(trainer.optimizer.state_dict())}

    resumed = small_model(dropout=0.3)  # a new process: fresh module and optimizer, given the checkpoint back
    resumed.load_state_dict(saved["weights"])
    second = Trainer(resumed, data, cfg, progress=False)
    second.optimizer.load_state_dict(saved["optimizer"])
    assert second.run_epoch(1)["epoch"] == 2
    for name, value in uninterrupted.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


def test_a_custom_loss_for_regression() -> None:
    x, _ = blobs()
    target = x[:, :1] * 2.0 - 1.0
    torch.manual_seed(0)
    model = nn.Linear(8, 1)
    history = fit(model, (x, target), replace(FAST, lr=0.05, epochs=8), loss_fn=F.mse_loss, progress=False)
    assert history[-1]["loss"] < 0.1 * history[0]["loss"]
    assert "train_accuracy" not in history[-1]

    def neg_mse(outputs: torch.Tensor, targets: torch.Tensor) -> float:
        return -float(F.mse_loss(outputs, targets))

    result = evaluate(model, (x, target), batch_size=10, metric=neg_mse)
    with torch.no_grad():
        expected = -float(F.mse_loss(model(x), target))
    assert result["metric"] == "neg_mse" and result["n"] == 96
    assert result["score"] == pytest.approx(expected, rel=1e-5)  # batches of 10, 10, ..., 6 weighted by size


def test_a_users_train_step_runs_with_the_optimizer_hooks() -> None:
    x, y = blobs()
    model = small_model()
    seen: list[float] = []

    def step(m: nn.Module, batch: Any, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        inputs, targets = batch
        optimizer.zero_grad()
        loss = F.cross_entropy(m(inputs), targets, label_smoothing=0.1)
        loss.backward()
        optimizer.step()
        seen.append(optimizer.param_groups[0]["lr"])
        return loss

    def keep_first_weight_zero(optimizer: torch.optim.Optimizer) -> None:
        optimizer.register_step_post_hook(lambda *_: model[0].weight.data[0, 0].zero_())

    history = fit(model, TensorDataset(x, y), FAST, train_step=step, on_optimizer=keep_first_weight_zero, progress=False)
    assert len(seen) == 4 * 6 and seen[0] == pytest.approx(0.1) and seen[-1] < seen[0]  # cosine schedule applied
    assert float(model[0].weight[0, 0].detach()) == 0.0
    assert history[-1]["loss"] < history[0]["loss"] and set(history[-1]) == {"epoch", "loss"}


@dataclass
class Output:
    """What a Hugging Face model returns: an object with ``.logits`` (and more)."""

    logits: torch.Tensor
    hidden: torch.Tensor


class NamedInputs(nn.Module):
    """Takes keyword inputs, as Hugging Face models do."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 3)

    def forward(self, features: torch.Tensor) -> Output:
        return Output(self.linear(features), features)


class Pairs(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return {"features": self.x[i]}, self.y[i]


def test_models_returning_logits_objects_or_tuples() -> None:
    x, y = blobs()
    torch.manual_seed(0)
    model = NamedInputs()
    history = fit(model, Pairs(x, y), FAST, progress=False)
    assert history[-1]["train_accuracy"] > 0.9
    result = evaluate(model, Pairs(x, y))
    assert result["metric"] == "accuracy" and result["score"] == result["accuracy"] > 0.9 and result["n"] == 96

    class TupleOut(nn.Module):
        def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return model.linear(inputs), inputs

    assert evaluate(TupleOut(), (x, y))["accuracy"] == result["accuracy"]


def test_bad_data_and_batches_are_explained() -> None:
    x, y = blobs()
    with pytest.raises(TypeError, match=r"expected an \(inputs, targets\) tensor pair, a Dataset or a DataLoader, got str"):
        fit(small_model(), "mnist", FAST, progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"expected inputs and targets of the same length, got 96 and 95"):
        evaluate(small_model(), (x, y[:-1]))
    with pytest.raises(TypeError, match=r"expected batches of \(inputs, targets\), got list of 3 .*; pass train_step="):
        fit(small_model(), TensorDataset(x, y, y), FAST, progress=False)
    with pytest.raises(TypeError, match=r"expected \(N, C\) class scores and N class indices for accuracy, got outputs "
                                        r"tensor of shape \(96, 1\) and targets tensor of shape \(96, 1\); pass metric="):
        evaluate(nn.Linear(8, 1), (x, x[:, :1]), batch_size=100)


class Stream(IterableDataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __iter__(self) -> Any:
        return iter(zip(self.x, self.y))


def test_an_unsized_loader_needs_the_constant_schedule() -> None:
    x, y = blobs()
    loader = DataLoader(Stream(x, y), batch_size=16)
    with pytest.raises(ConfigError, match=r"the cosine schedule needs the number of steps per epoch; .*use schedule = 'constant'"):
        fit(small_model(), loader, FAST, progress=False)
    history = fit(small_model(), loader, replace(FAST, schedule="constant"), progress=False)
    assert history[-1]["loss"] < history[0]["loss"]
    with pytest.raises(TypeError, match=r"expected a map-style Dataset .*got an IterableDataset; wrap it in a DataLoader"):
        fit(small_model(), Stream(x, y), FAST, progress=False)


def test_fit_writes_one_line_per_epoch_to_a_log(capsys: pytest.CaptureFixture[str]) -> None:
    x, y = blobs()
    fit(small_model(), (x, y), replace(FAST, epochs=2), description="blobs")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"blobs 1/2: 6/6 in \d+\.\ds, loss=[\d.]+, train_accuracy=[\d.]+", lines[0])
    assert lines[1].startswith("blobs 2/2: 6/6 in ")


def test_the_shift_background_is_the_datasets_black_or_the_data_minimum() -> None:
    images = torch.tensor([[-0.7, 3.0]])
    assert background_value("mnist", images) == (0.0 - 0.1307) / 0.3081
    assert background_value(None, images) == pytest.approx(-0.7)
    assert background_value("imagefolder:x", images) == pytest.approx(-0.7)


def test_workers_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match=r"train.workers: expected an integer >= 0, got -1"):
        TrainConfig(workers=-1)


# --- knowledge distillation ---------------------------------------------------------------------------


def test_distillation_loss_is_zero_for_the_teachers_own_scores_and_positive_otherwise() -> None:
    from deepcompress.train import distillation_loss

    scores = torch.randn(8, 10, generator=torch.Generator().manual_seed(0))
    assert float(distillation_loss(scores, scores, 4.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(scores.flip(1), scores, 4.0)) > 0.01


def test_distillation_step_pulls_the_student_toward_the_teacher_and_leaves_the_teacher_alone() -> None:
    from deepcompress.train import DistillConfig, Trainer, distillation_loss

    generator = torch.Generator().manual_seed(0)
    inputs, labels = torch.randn(256, 6, generator=generator), torch.randint(0, 3, (256,), generator=generator)
    torch.manual_seed(1)
    teacher, student = torch.nn.Linear(6, 3), torch.nn.Linear(6, 3)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    def gap() -> float:
        with torch.no_grad():
            return float(distillation_loss(student(inputs), teacher(inputs), 1.0))

    start = gap()
    cfg = TrainConfig(epochs=20, lr=0.1, augment=False, weight_decay=0.0)
    trainer = Trainer(student, (inputs, labels), cfg, progress=False, teacher=(teacher, DistillConfig(temperature=2.0, alpha=1.0)))
    history = [trainer.run_epoch(epoch) for epoch in range(cfg.epochs)]
    assert gap() < 0.1 * start
    assert "train_accuracy" in history[-1]
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_distill_config_rejects_bad_values_and_a_user_step() -> None:
    from deepcompress.train import DistillConfig, Trainer

    with pytest.raises(ConfigError, match=r"distill.alpha: expected a number in \[0, 1\], got 1.5"):
        DistillConfig(alpha=1.5)
    with pytest.raises(ConfigError, match="distill.temperature: expected a positive number, got 0"):
        DistillConfig(temperature=0)
    with pytest.raises(ConfigError, match="distill: unknown keys"):
        DistillConfig.from_dict({"temp": 2})
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ConfigError, match="expected train_step or a teacher, got both"):
        Trainer(model, (torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)), TrainConfig(), progress=False,
                train_step=lambda m, b, o: 0.0, teacher=(model, DistillConfig()))
