"""Plain, seeded training and evaluation loops for any classifier or task, with progress output.

Used for the reference models and, through callbacks, for the retraining inside pruning and the
centroid fine-tuning of trained quantization. Data is an in-memory ``(inputs, targets)`` tensor pair
(the fast path, MNIST-sized), a ``Dataset`` or a ``DataLoader`` (see :mod:`deepcompress.datasets`);
the loss, the whole training step and the evaluation metric can be the user's own.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Iterable, Iterator, Mapping, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deepcompress.data import NORMALIZATION
from deepcompress.datasets import Data, check_data, describe
from deepcompress.errors import ConfigError
from deepcompress.validate import reject_unknown
from deepcompress.progress import progress as progress_bar

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant")

#: A user's training step: ``train_step(model, batch, optimizer) -> the batch's mean loss`` (see :func:`fit`).
TrainStep = Callable[[nn.Module, Any, torch.optim.Optimizer], Union[torch.Tensor, float]]
#: The step :func:`fit` runs: returns the loss and the number of right answers (``None``: not counted).
Step = Callable[[nn.Module, Any, torch.optim.Optimizer], Tuple[Union[torch.Tensor, float], Union[int, None]]]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run.

    ``augment`` shifts each image by up to ``max_shift`` pixels (random, per sample), a standard MNIST
    regulariser; the paper's Caffe references used none, ours are trained to at least their accuracy.
    It applies to in-memory image tensors only; a Dataset brings its own augmentation.

    ``workers`` is the number of DataLoader processes that load a Dataset's batches. The default 0
    loads them in the training process: in-memory and small datasets gain nothing from workers, which
    are started afresh every epoch (that keeps resumed runs exact) and compete with the model for CPU
    cores. Raise it when decoding dominates, e.g. an image folder feeding a GPU.
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
    workers: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"train.optimizer: expected one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"train.schedule: expected one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.epochs < 0 or self.batch_size < 1:
            raise ConfigError(f"train: expected epochs >= 0 and batch_size >= 1, got {self.epochs}, {self.batch_size}")
        if self.workers < 0:
            raise ConfigError(f"train.workers: expected an integer >= 0, got {self.workers}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"train.lr: expected a positive number, got {self.lr}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        reject_unknown("train", data, [f.name for f in fields(cls)])
        return cls(**dict(data))


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def random_shift(x: torch.Tensor, max_shift: int, background: float, generator: torch.Generator) -> torch.Tensor:
    """Translate each image in ``x`` (N, C, H, W) by a random integer offset in [-max_shift, max_shift]."""
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


# --- batches of any data ------------------------------------------------------------------------------


def to_device(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor in it (nested in dicts, lists, tuples) moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {key: to_device(value, device) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(value, device) for value in obj)
    return obj


def batch_length(batch: Any) -> int:
    """How many samples ``batch`` holds: the first dimension of the first tensor in it."""
    if isinstance(batch, torch.Tensor):
        return len(batch) if batch.dim() else 1
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for value in values:
        n = batch_length(value)
        if n:
            return n
    return 0


def split_batch(batch: Any) -> tuple[Any, Any]:
    """``(inputs, targets)`` of a batch that is such a pair."""
    if isinstance(batch, (list, tuple)) and len(batch) == 2:
        return batch[0], batch[1]
    raise TypeError(f"expected batches of (inputs, targets), got {describe(batch)}; "
                    "pass train_step= to fit (or make the data yield pairs) for other batches")


def forward(model: nn.Module, inputs: Any) -> Any:
    """``model(**inputs)`` for a dict of named inputs (as Hugging Face models take them), else ``model(inputs)``."""
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)


def logits_of(outputs: Any) -> torch.Tensor:
    """The prediction tensor of a model's outputs: the tensor itself, ``outputs.logits`` (a Hugging
    Face ``ModelOutput``) or the first element of a tuple or list."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    logits = getattr(outputs, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(outputs, (tuple, list)) and outputs and isinstance(outputs[0], torch.Tensor):
        return outputs[0]
    raise TypeError(f"expected the model to return a tensor, an object with .logits or a tuple starting with a "
                    f"tensor, got {describe(outputs)}; pass loss_fn= / metric= that read it")


def correct_count(outputs: Any, targets: Any) -> int | None:
    """How many samples are classified right, or ``None`` when this is not classification
    (outputs other than (N, C) scores, or targets other than N class indices)."""
    if not isinstance(targets, torch.Tensor) or targets.dim() != 1 or targets.is_floating_point():
        return None
    logits = logits_of(outputs)
    if logits.dim() != 2 or len(logits) != len(targets):
        return None
    return int((logits.argmax(1) == targets).sum())


def default_loss(outputs: Any, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the outputs' logits (see :func:`logits_of`) against class indices."""
    return F.cross_entropy(logits_of(outputs), targets)


def tensor_batches(
    images: torch.Tensor, labels: torch.Tensor, order: torch.Tensor, batch_size: int, device: torch.device,
    shift: int, background: float, generator: torch.Generator,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of in-memory tensors in ``order``, 4-D float images shifted by up to ``shift`` pixels."""
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        x, y = images[idx].to(device), labels[idx].to(device)
        if shift > 0 and x.dim() == 4 and x.is_floating_point():
            x = random_shift(x, shift, background, generator)
        yield x, y


def background_value(dataset: str | None, images: torch.Tensor) -> float:
    """The normalised value of an empty pixel, which shifted images are padded with: black of a built-in
    dataset (``(0 - mean) / std``), else the smallest value in ``images``. The smallest value is black
    for images whose background is their darkest pixel (digits, sketches); for photographs it is an
    arbitrary dark pad, so turn ``augment`` off or augment in your own Dataset there."""
    if dataset in NORMALIZATION:
        mean, std = NORMALIZATION[dataset]
        return (0.0 - mean) / std
    return float(images.min()) if images.numel() else 0.0


def epoch_loader(dataset: Dataset, cfg: TrainConfig, device: torch.device, generator: torch.Generator) -> DataLoader:
    """A DataLoader over ``dataset`` in this epoch's seeded permutation, with ``cfg.workers`` worker
    processes and pinned memory when feeding a GPU. The workers' seeds come from ``generator`` too,
    not from the global RNG, so a Dataset trains exactly as its tensors would (dropout included)."""
    order = torch.randperm(len(dataset), generator=generator).tolist()  # type: ignore[arg-type]
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=order, num_workers=cfg.workers,
                      pin_memory=device.type == "cuda", generator=generator)


def sized(loader: DataLoader) -> int | None:
    """``len(loader)``, or ``None`` for a loader over an iterable dataset without a length."""
    try:
        return len(loader)
    except TypeError:
        return None


# --- training -----------------------------------------------------------------------------------------


class Trainer:
    """One training run of ``model`` on ``data``, one epoch at a time.

    Every epoch draws its shuffling, augmentation, DataLoader worker seeds and the global torch seed
    (which dropout draws from) from ``(cfg.seed, epoch)``, and the cosine schedule depends only on the
    epoch's first step; so epochs can be run by whoever owns the run's progress: after saving the
    weights and ``optimizer.state_dict()`` at the end of epoch ``k``, a new Trainer in another process,
    given them back, continues with ``run_epoch(k)`` exactly as an uninterrupted run would. The
    training itself knows nothing about checkpoints (the pipeline's runner owns them).

    Arguments as for :func:`fit`; ``teacher``, a ``(dense reference, DistillConfig)`` pair, trains by
    knowledge distillation (:func:`distillation_step`).
    """

    def __init__(
        self,
        model: nn.Module,
        data: Data,
        cfg: TrainConfig,
        *,
        dataset: str | None = None,
        lr: float | None = None,
        device: str | torch.device | None = None,
        on_optimizer: Callable[[torch.optim.Optimizer], None] | None = None,
        progress: bool = True,
        description: str = "train",
        loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
        train_step: TrainStep | None = None,
        teacher: tuple[nn.Module, DistillConfig] | None = None,
    ) -> None:
        if teacher is not None and train_step is not None:
            raise ConfigError("distillation replaces the built-in training step; expected train_step or a teacher, got both")
        self.kind = check_data(data)
        self.model, self.data, self.cfg = model, data, cfg
        self.device = pick_device(str(device) if device is not None else None)
        model.to(self.device)
        self.optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg, lr)
        if on_optimizer is not None:
            on_optimizer(self.optimizer)
        self.steps_per_epoch = count_steps(data, self.kind, cfg)
        self.total_steps = max(1, cfg.epochs * (self.steps_per_epoch or 0))
        self.base_lrs = [lr if lr is not None else cfg.lr for _ in self.optimizer.param_groups]
        augment = self.kind == "tensors" and cfg.augment
        self.background = background_value(dataset, data[0]) if augment else 0.0  # type: ignore[index]
        if teacher is not None:
            teacher[0].to(self.device).eval()
            self.step_fn = distillation_step(teacher[0], teacher[1], loss_fn or default_loss)
        else:
            self.step_fn = user_step(train_step) if train_step is not None else builtin_step(loss_fn or default_loss)
        self.progress, self.description = progress, description

    def run_epoch(self, epoch: int) -> dict[str, float]:
        """Train epoch ``epoch`` (0-based); returns ``{"epoch", "loss"}`` (and ``"train_accuracy"``)."""
        cfg, optimizer = self.cfg, self.optimizer
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)
        self.model.train()
        meter = EpochMeter()
        batches = epoch_batches(self.data, self.kind, cfg, self.device, generator, self.background)
        bar = progress_bar(batches, desc=f"{self.description} {epoch + 1}/{cfg.epochs}", total=self.steps_per_epoch,
                           enabled=self.progress)
        step = epoch * (self.steps_per_epoch or 0)
        for batch in bar:
            if cfg.schedule == "cosine":
                factor = 0.5 * (1.0 + math.cos(math.pi * step / self.total_steps))
                for group, base in zip(optimizer.param_groups, self.base_lrs):
                    group["lr"] = base * factor
            batch = to_device(batch, self.device)
            meter.add(batch_length(batch), *self.step_fn(self.model, batch, optimizer))
            step += 1
            bar.set_postfix(refresh=False, **meter.summary())
        return {"epoch": epoch + 1, **meter.summary()}


def fit(
    model: nn.Module,
    data: Data,
    cfg: TrainConfig,
    *,
    dataset: str | None = None,
    lr: float | None = None,
    device: str | torch.device | None = None,
    on_optimizer: Callable[[torch.optim.Optimizer], None] | None = None,
    progress: bool = True,
    description: str = "train",
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
    train_step: TrainStep | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place on ``data`` for ``cfg.epochs``; returns per epoch ``{"epoch", "loss"}``
    and, for classification with the built-in step, ``"train_accuracy"``.

    ``data`` is any :data:`~deepcompress.datasets.Data`:

    - an ``(inputs, targets)`` tensor pair: the fast path, batches are sliced from memory; with
      ``cfg.augment``, 4-D float image batches are shifted by up to ``cfg.max_shift`` pixels, padded
      with the background of ``dataset`` (a built-in name) or else the smallest input value (see
      :func:`background_value`);
    - a ``Dataset``: batches of ``cfg.batch_size`` in a seeded permutation per epoch, loaded by
      ``cfg.workers`` processes; augmentation is the Dataset's own business;
    - a ``DataLoader``: used as it is (its batch size, and its own shuffling decides whether a run is
      reproducible and resumable).

    Batches are ``(inputs, targets)`` pairs; a dict of inputs is passed as keyword arguments. The
    built-in step computes ``loss_fn(outputs, targets)`` (default: cross-entropy of the outputs'
    logits, so a model may return a tensor, a Hugging Face output with ``.logits`` or a tuple), calls
    ``backward`` and steps the optimizer. ``train_step(model, batch, optimizer) -> loss`` replaces that
    step for any other task: it receives the batch moved to the device, the model in train mode and
    the learning rate already scheduled, and must do the whole step itself (zero the gradients,
    forward, backward, ``optimizer.step()``); it returns the batch's mean loss, which only feeds the
    history. Hooks that ``on_optimizer`` registers on the optimizer run inside that ``step()`` all the
    same (pruning keeps masked weights at zero this way).

    ``on_optimizer`` receives the optimizer before the first step. ``lr`` overrides ``cfg.lr``
    (retraining uses a fraction of the original rate). To run epochs separately (checkpoints, resume),
    use :class:`Trainer`.
    """
    trainer = Trainer(model, data, cfg, dataset=dataset, lr=lr, device=device, on_optimizer=on_optimizer,
                      progress=progress, description=description, loss_fn=loss_fn, train_step=train_step)
    return [trainer.run_epoch(epoch) for epoch in range(cfg.epochs)]


def count_steps(data: Data, kind: str, cfg: TrainConfig) -> int | None:
    """Optimizer steps per epoch (``None``: a DataLoader without a length, allowed only without a
    schedule that needs the total)."""
    if kind == "loader":
        steps = sized(data)  # type: ignore[arg-type]
        if steps is None and cfg.schedule == "cosine":
            raise ConfigError("train.schedule: the cosine schedule needs the number of steps per epoch; expected a "
                              "DataLoader with a length, got one without; use schedule = 'constant'")
        return steps
    count = len(data[0]) if kind == "tensors" else len(data)  # type: ignore[index, arg-type]
    return math.ceil(count / cfg.batch_size)


def epoch_batches(data: Data, kind: str, cfg: TrainConfig, device: torch.device, generator: torch.Generator,
                  background: float) -> Iterable[Any]:
    """One epoch's batches of ``data``, shuffled (and tensors augmented) from the epoch's ``generator``."""
    if kind == "tensors":
        images, labels = data  # type: ignore[misc]
        order = torch.randperm(len(images), generator=generator)
        shift = cfg.max_shift if cfg.augment else 0
        return tensor_batches(images, labels, order, cfg.batch_size, device, shift, background, generator)
    if kind == "dataset":
        return epoch_loader(data, cfg, device, generator)  # type: ignore[arg-type]
    return data  # type: ignore[return-value]


def builtin_step(loss_fn: Callable[[Any, Any], torch.Tensor]) -> Step:
    """The built-in step: forward, ``loss_fn``, backward, optimizer step; returns (loss, correct count)."""

    def step(model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, int | None]:
        inputs, targets = split_batch(batch)
        outputs = forward(model, inputs)
        loss = loss_fn(outputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss, correct_count(outputs, targets)

    return step


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation (Hinton, Vinyals, Dean 2015) from the dense reference while retraining.

    The loss becomes ``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) *
    label loss``: the pruned or weight-shared student learns the reference's softened class scores,
    which carry more information per image than the label alone (the ``T^2`` keeps the soft term's
    gradient scale independent of ``T``). Used in the prune rounds' retraining and the centroid
    fine-tuning (paper sections 2-3) when the pipeline config has a ``[distill]`` table.
    """

    temperature: float = 4.0
    alpha: float = 0.7

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(f"distill.temperature: expected a positive number, got {self.temperature!r}")
        if not (isinstance(self.alpha, (int, float)) and 0.0 <= self.alpha <= 1.0):
            raise ConfigError(f"distill.alpha: expected a number in [0, 1], got {self.alpha!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DistillConfig":
        reject_unknown("distill", data, [f.name for f in fields(cls)])
        return cls(**dict(data))


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)


def distillation_step(teacher: nn.Module, cfg: DistillConfig, loss_fn: Callable[[Any, Any], torch.Tensor]) -> Step:
    """The built-in step with the teacher's softened scores added to the label loss (see
    :class:`DistillConfig`); the teacher sees the same (augmented) batch, in eval mode, without gradients."""

    def step(model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, int | None]:
        inputs, targets = split_batch(batch)
        with torch.no_grad():
            soft = logits_of(forward(teacher, inputs))
        outputs = forward(model, inputs)
        loss = cfg.alpha * distillation_loss(logits_of(outputs), soft, cfg.temperature)
        if cfg.alpha < 1.0:
            loss = loss + (1.0 - cfg.alpha) * loss_fn(outputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss, correct_count(outputs, targets)

    return step


def user_step(train_step: TrainStep) -> Step:
    """A user's ``train_step`` in the built-in step's shape (it reports no right answers)."""

    def step(model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor | float, None]:
        return train_step(model, batch, optimizer), None

    return step


class EpochMeter:
    """Sample-weighted running loss and, while every batch is classification, accuracy of one epoch."""

    def __init__(self) -> None:
        self.n = 0
        self.loss_sum = 0.0
        self.correct: int | None = 0

    def add(self, n: int, loss: torch.Tensor | float, correct: int | None) -> None:
        self.loss_sum += float(loss.detach() if isinstance(loss, torch.Tensor) else loss) * n
        self.correct = None if correct is None or self.correct is None else self.correct + correct
        self.n += n

    def summary(self) -> dict[str, float]:
        """``{"loss"}`` and, when every batch counted right answers, ``{"train_accuracy"}``."""
        out = {"loss": self.loss_sum / self.n if self.n else 0.0}
        if self.correct is not None and self.n:
            out["train_accuracy"] = self.correct / self.n
        return out


# --- evaluation ---------------------------------------------------------------------------------------


def eval_batches(data: Data, batch_size: int) -> Iterable[Any]:
    """The batches of ``data`` in order: slices of tensors, a DataLoader over a Dataset, a DataLoader as is."""
    kind = check_data(data)
    if kind == "tensors":
        inputs, targets = data  # type: ignore[misc]
        return ((inputs[s : s + batch_size], targets[s : s + batch_size]) for s in range(0, len(inputs), batch_size))
    if kind == "dataset":
        return DataLoader(data, batch_size=batch_size)  # type: ignore[arg-type]
    return data  # type: ignore[return-value]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Data,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 1000,
    metric: Callable[[Any, Any], float] | None = None,
) -> dict[str, Any]:
    """Score ``model`` on ``data`` (any :data:`~deepcompress.datasets.Data` of ``(inputs, targets)``
    batches); a higher score is always better.

    By default the metric is classification accuracy of the outputs' logits:
    ``{"metric": "accuracy", "score", "accuracy", "error", "n"}`` with error = 1 - accuracy, as
    fractions. ``metric(outputs, targets) -> float`` is any other per-batch mean (higher = better, so
    negate a loss); batch values are combined weighted by batch size into
    ``{"metric": metric.__name__, "score", "n"}``. No samples score 0.0.
    """
    device = pick_device(str(device) if device is not None else None)
    model.to(device).eval()
    n, total = 0, 0.0
    for batch in eval_batches(data, batch_size):
        inputs, targets = split_batch(to_device(batch, device))
        outputs = forward(model, inputs)
        size = batch_length(targets) or batch_length(inputs)
        if metric is None:
            correct = correct_count(outputs, targets)
            if correct is None:
                raise TypeError(f"expected (N, C) class scores and N class indices for accuracy, got outputs "
                                f"{describe(logits_of(outputs))} and targets {describe(targets)}; pass metric=")
            total += correct
        else:
            total += float(metric(outputs, targets)) * size
        n += size
    score = total / n if n else 0.0
    if metric is None:
        return {"metric": "accuracy", "score": score, "accuracy": score, "error": 1.0 - score, "n": n}
    return {"metric": getattr(metric, "__name__", type(metric).__name__), "score": score, "n": n}
