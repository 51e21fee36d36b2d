"""Plain, seeded training and evaluation loops with progress bars.

Used for the reference models and, through callbacks, for the retraining inside pruning and the
centroid fine-tuning of trained quantization. Data lives in memory as tensors (MNIST-sized).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from deepcompress.data import NORMALIZATION
from deepcompress.errors import ConfigError

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run.

    ``augment`` shifts each image by up to ``max_shift`` pixels (random, per sample), a standard MNIST
    regulariser; the paper's Caffe references used none, ours are trained to at least their accuracy.
    """

    epochs: int = 20
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    schedule: str = "cosine"
    augment: bool = True
    max_shift: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"train.optimizer: expected one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"train.schedule: expected one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.epochs < 0 or self.batch_size < 1:
            raise ConfigError(f"train: expected epochs >= 0 and batch_size >= 1, got {self.epochs}, {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"train.lr: expected a positive number, got {self.lr}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ConfigError(f"train: unknown keys {unknown}; allowed keys are {sorted(allowed)}")
        return cls(**dict(data))


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def random_shift(x: torch.Tensor, max_shift: int, background: float, generator: torch.Generator) -> torch.Tensor:
    """Translate each image in ``x`` (N, 1, H, W) by a random integer offset in [-max_shift, max_shift]."""
    n, _, h, w = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator).to(x.device, x.dtype)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = 2.0 * shifts[:, 0] / w
    theta[:, 1, 2] = 2.0 * shifts[:, 1] / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    shifted = F.grid_sample(x - background, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return shifted + background


def make_optimizer(params: Any, cfg: TrainConfig, lr: float | None = None) -> torch.optim.Optimizer:
    """SGD with momentum or Adam as ``cfg`` says, at ``lr`` (defaults to ``cfg.lr``)."""
    lr = cfg.lr if lr is None else lr
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)


def fit(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    cfg: TrainConfig,
    *,
    dataset: str = "mnist",
    lr: float | None = None,
    device: str | torch.device | None = None,
    on_optimizer: Callable[[torch.optim.Optimizer], None] | None = None,
    progress: bool = True,
    description: str = "train",
    start_epoch: int = 0,
    optimizer_state: dict[str, Any] | None = None,
    on_epoch_end: Callable[[int, torch.optim.Optimizer], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place on ``data`` = (images, labels); returns per-epoch loss and accuracy.

    ``on_optimizer`` receives the optimizer before the first step, so callers can register hooks
    (pruning keeps masked weights at zero this way). ``lr`` overrides ``cfg.lr`` (retraining uses a
    fraction of the original rate).

    Resuming: every epoch draws its shuffling and augmentation from a generator seeded by
    ``(cfg.seed, epoch)``, so a run restarted at ``start_epoch`` with the weights and
    ``optimizer_state`` saved by ``on_epoch_end(epochs_done, optimizer)`` continues exactly as an
    uninterrupted run would.
    """
    device = pick_device(str(device) if device is not None else None)
    model.to(device)
    images, labels = data
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, cfg, lr)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    if on_optimizer is not None:
        on_optimizer(optimizer)
    steps_per_epoch = math.ceil(len(images) / cfg.batch_size)
    total_steps = max(1, cfg.epochs * steps_per_epoch)
    base_lrs = [lr if lr is not None else cfg.lr for _ in optimizer.param_groups]
    mean, std = NORMALIZATION[dataset]
    background = (0.0 - mean) / std
    history: list[dict[str, float]] = []
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, cfg.epochs):
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)
        model.train()
        order = torch.randperm(len(images), generator=generator)
        loss_sum, correct = 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"{description} {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        for i in bar:
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            x, y = images[idx].to(device), labels[idx].to(device)
            if cfg.augment and cfg.max_shift > 0:
                x = random_shift(x, cfg.max_shift, background, generator)
            if cfg.schedule == "cosine":
                factor = 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
                for group, base in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base * factor
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
        history.append({"epoch": epoch + 1, "loss": loss_sum / len(images), "train_accuracy": correct / len(images)})
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, optimizer)
    return history


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    device: str | torch.device | None = None,
    batch_size: int = 1000,
) -> dict[str, float]:
    """Test-set accuracy: ``{"accuracy", "error", "n"}`` (error = 1 - accuracy, as fractions)."""
    device = pick_device(str(device) if device is not None else None)
    model.to(device).eval()
    images, labels = data
    correct = 0
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        y = labels[start : start + batch_size].to(device)
        correct += int((model(x).argmax(1) == y).sum())
    n = len(images)
    accuracy = correct / n if n else 0.0
    return {"accuracy": accuracy, "error": 1.0 - accuracy, "n": n}
