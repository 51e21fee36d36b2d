"""The whole Deep Compression pipeline on any network: prune + retrain, quantize + fine-tune, encode, verify.

:func:`compress` takes what a user has -- a module, a :class:`PipelineConfig`, training and test data
(tensors, Datasets or DataLoaders), optionally their own ``evaluate`` or ``train_step`` -- and writes
one file; :func:`compress_config` resolves all of that from a TOML config (model reference, checkpoint,
dataset) and calls it. The pipeline is a list of stages (reference, prune, quantize, fine-tune, file)
run by one :class:`Runner`, which owns skipping finished stages, restoring their result, recording
each stage's score and time, and checkpointing, so an interrupted run resumes and writes the same file
(paper Fig. 1: each stage reports what it cost). The written file is read back; the decoded network
must reproduce the quantized network's tensors bit for bit and score exactly what it scored.

Without training data (post-training mode: no ``train``, ``epochs_per_round = 0``, ``quantize.epochs
= 0``) nothing is retrained; without test data or ``evaluate`` nothing is scored, and the report gives
each layer's relative weight error instead.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from deepcompress.coding import best_index_bits
from deepcompress.compressed import CompressedModel
from deepcompress.config import PipelineConfig
from deepcompress.runtime.dense import to_dense_module
from deepcompress.errors import ConfigError
from deepcompress.format import load_compressed, save, spec
from deepcompress.format.inspect import inspect_file
from deepcompress.prune import AUTO_FRACTIONS, PruneMethod, SensitivityPlanner, keep_pruned_zero, set_masks_, sparsity_report
from deepcompress.prune.schedule import finish_round_, prune_round_
from deepcompress.prune.apply import MASK
from deepcompress.quantize import (
    choose_bits,
    codebook_of,
    export_compressed,
    quantization_report,
    quantize_,
    quantized_layers,
    share_biases_,
    stored_as_is,
    strip_quantization_,
)
from deepcompress.quantize.config import AUTO
from deepcompress.resume import RunState, StageCache
from deepcompress.selection import FilterFn, select_layers
from deepcompress.train import Data, DistillConfig, Trainer, evaluate as evaluate_data

Score = Callable[[nn.Module], float]


@dataclass
class StageResult:
    """Score (test accuracy, or the configured metric; ``None`` without test data) and wall time after one stage."""

    stage: str
    accuracy: float | None
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class PipelineResult:
    """What ``compress`` did: per-stage results and the written file's report."""

    stages: list[StageResult]
    report: dict[str, Any]
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        def row(s: StageResult) -> dict[str, Any]:
            error = None if s.accuracy is None else 1 - s.accuracy
            return {"stage": s.stage, "accuracy": s.accuracy, "error": error, "seconds": round(s.seconds, 2), **s.details}

        return {"stages": [row(s) for s in self.stages], "report": self.report, "config": self.config}


@dataclass
class Task:
    """What the stages train and score with."""

    train: Data | None
    score: Score | None
    validate: Score | None
    dataset: str | None = None
    loss_fn: Callable[..., torch.Tensor] | None = None
    train_step: Callable[..., Any] | None = None
    progress: bool = True
    teacher: tuple[nn.Module, DistillConfig] | None = None
    """The dense reference and how to distill from it (``config.distill``), for every retraining."""


@dataclass
class Stage:
    """One step of the pipeline: ``run`` does it (returning details for the report); ``restore`` puts
    a finished stage's result back into the model when a resumed run skips it."""

    name: str
    run: Callable[[nn.Module], dict[str, Any]]
    restore: Callable[[nn.Module], None] = lambda model: None
    checkpoint: bool = True
    """Save the model's weights under the stage's name when it finishes (``restore`` reads them)."""


class Runner:
    """Runs stages in order and owns everything about resuming (see the module docstring).

    One skip / restore site: a finished stage is skipped and its ``restore`` replays its effect; the
    stage that was interrupted gets the model's latest checkpoint back (masks included) before it
    continues. One record site (:meth:`record`) and one save site (:meth:`checkpoint`). Inside a stage,
    :meth:`epochs` runs a :class:`~deepcompress.train.Trainer` epoch by epoch and :meth:`once` runs a
    step whose JSON result is kept, so the algorithms themselves know nothing about resuming.
    """

    def __init__(self, state: RunState, score: Score | None, log: Callable[[str], None],
                 cache: StageCache | None = None) -> None:
        self.state = state
        self.cache = cache
        self.score = score
        self.log = log
        self.results = [StageResult(**s) for s in state.get("stages", [])]
        self.stage = ""

    def done(self, name: str) -> bool:
        return any(r.stage == name for r in self.results)

    def run(self, model: nn.Module, stages: list[Stage]) -> list[StageResult]:
        for stage in stages:
            if self.done(stage.name):
                stage.restore(model)
                continue
            self.stage = stage.name
            if self.reuse(model, stage):
                continue
            if self.state.get("current") == stage.name:
                restore_pruned(model, self.state.weights())
            start = time.perf_counter()
            details = stage.run(model)
            self.record(model, stage.name, time.perf_counter() - start, details)
            if stage.checkpoint:
                self.state.update(model, weights_name=stage.name)
                if self.cache is not None:
                    self.cache.save(stage.name, [asdict(r) for r in self.results], model)
        return self.results

    def reuse(self, model: nn.Module, stage: Stage) -> bool:
        """Take ``stage`` from the cache when another run finished it (same reference and settings)."""
        cached = self.cache.load(stage.name) if self.cache is not None else None
        if cached is None:
            return False
        stages, weights = cached
        self.state.dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights, self.state.dir / f"{stage.name}.safetensors")
        stage.restore(model)
        self.results = [StageResult(**s) for s in stages]
        self.state.update(stages=stages)
        self.log(f"[{stage.name}] reused from {weights.parent} (same reference and settings)")
        return True

    def record(self, model: nn.Module, name: str, seconds: float, details: dict[str, Any]) -> None:
        """Score the model after stage ``name`` (a stage that measured it already passes ``details["score"]``)."""
        if "score" in details:
            score = details.pop("score")
        else:
            score = self.score(model) if self.score is not None else None
        self.results.append(StageResult(name, score, seconds, details))
        shown = "not scored (no test data)" if score is None else f"test score {100 * score:.2f}%"
        self.log(f"[{name}] {shown}, {seconds:.0f} s")
        self.state.update(stages=[asdict(r) for r in self.results])

    def checkpoint(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, **progress: Any) -> None:
        """Save the model (and optimizer) as the current stage's latest state, with ``progress``."""
        self.state.update(model, optimizer, current=self.stage, **progress)

    def once(self, key: str, run: Callable[[], Any]) -> Any:
        """``run()``'s JSON result, computed once per run (a resumed run reads it back)."""
        if self.state.get(key) is None:
            self.state.update(**{key: run()})
        return self.state.get(key)

    def epochs(self, model: nn.Module, key: str, make_trainer: Callable[[], Trainer], epochs: int) -> None:
        """Run the epochs of training run ``key`` not yet done, checkpointing after each one (with the
        run's training seconds so far, summed over resumed processes)."""
        done = self.state.get(key, {}).get("epochs_done", 0)
        if done >= epochs:
            return
        trainer = make_trainer()
        if done:  # the weights came back when the stage resumed; the optimizer's moments come back here
            trainer.optimizer.load_state_dict(self.state.optimizer_state())
        seconds = self.state.get(key, {}).get("seconds", 0.0)
        for epoch in range(done, epochs):
            start = time.perf_counter()
            trainer.run_epoch(epoch)
            seconds += time.perf_counter() - start
            self.checkpoint(model, trainer.optimizer, **{key: {"epochs_done": epoch + 1, "seconds": seconds}})


def compress(
    model: nn.Module,
    config: PipelineConfig,
    *,
    out: str | os.PathLike[str],
    train: Data | None = None,
    test: Data | None = None,
    evaluate: Score | None = None,
    train_step: Callable[..., Any] | None = None,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    metric: Callable[[Any, Any], float] | None = None,
    filter_fn: FilterFn | None = None,
    dataset: str | None = None,
    arch: dict[str, Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stage_cache: str | os.PathLike[str] | None = None,
) -> PipelineResult:
    """Compress ``model`` in place as ``config`` says and write the file ``out``; returns the result.

    ``train`` / ``test``: ``(inputs, targets)`` tensors, Datasets or DataLoaders (``train`` None: no
    retraining). ``evaluate(model) -> float`` (higher is better) replaces scoring on ``test``;
    ``metric(outputs, targets)`` and ``loss_fn(outputs, targets)`` replace accuracy and cross-entropy,
    ``train_step(model, batch, optimizer)`` the training step (see :func:`deepcompress.train.fit`).
    ``filter_fn(module, name)`` narrows the layers compressed (with ``config.targets`` / ``ignore``).
    ``arch``: the architecture record stored in the file (default: :func:`deepcompress.sources.record_for`).
    The run checkpoints after every stage and retraining epoch; called again with the same
    configuration after an interruption, it resumes and writes the same file. ``stage_cache``: a
    directory where finished pruning stages are kept and reused by runs that differ only in their
    ``[quantize]`` / ``[encode]`` tables (:class:`~deepcompress.resume.StageCache`). ``config.distill``
    retrains by knowledge distillation from a copy of ``model`` as it is passed in (the reference).
    """
    if config.quantize is None:
        raise ConfigError("config has no [quantize] table; the compressed format stores codebooks, so quantization is required")
    out = Path(out)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"cannot write {out}: directory {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise PermissionError(f"cannot write {out}: directory {out.parent} is not writable")
    config = _narrow_selection(model, config, filter_fn)
    validation = None
    if uses_validation(config):
        if train is None:
            raise ConfigError("automatic pruning or bits (method/bits 'auto') choose on held-out training data; pass train=...")
        train, validation = split_validation(train, config)
    score = evaluate or _scorer(test, config.device, metric)
    validate = _scorer(validation, config.device, metric)
    teacher = (plain_copy(model).requires_grad_(False), config.distill) if config.distill and train is not None else None
    task = Task(train, score, validate, dataset, loss_fn, train_step, progress, teacher)
    state = RunState(out, config.to_dict())
    if state.resumed:
        log(f"resuming from {state.dir}")
    if arch is None:
        from deepcompress.sources import record_for

        record = record_for(model)
        arch = record.to_dict() if record is not None else None
    cache = StageCache(Path(stage_cache), config.to_dict(), model.state_dict()) if stage_cache is not None else None
    runner = Runner(state, score, log, cache)
    reference = {n: m.weight.detach().cpu().clone() for n, m in select_layers(model, config.quantize.types,
                 config.quantize.patterns, config.quantize.ignore)} if score is None else None
    written: dict[str, Any] = {}

    def write(model: nn.Module) -> dict[str, Any]:
        report, file_score = write_verified(model, config, out, runner.results[0].accuracy, score, dataset=dataset, arch=arch)
        written["report"] = report
        log(f"[file] {out}: {report['file_bytes']} bytes, {report['ratio']:.1f}x smaller than dense")
        details = {"score": file_score, "file_bytes": report["file_bytes"], "ratio": report["ratio"]}
        return details if reference is None else {**details, "weight_error": weight_errors(model, reference)}

    runner.run(model, _stages(config, task, runner) + [Stage("file", write, checkpoint=False)])
    state.finish()
    return PipelineResult(runner.results, written["report"], config.to_dict())


def _stages(cfg: PipelineConfig, task: Task, runner: Runner) -> list[Stage]:
    """The pipeline's stages for ``cfg``: reference, prune (when configured), quantize, fine-tune (when
    configured and there is training data)."""
    state = runner.state
    stages = [Stage("reference", lambda model: {}, checkpoint=False)]
    if cfg.prune is not None:
        stages.append(Stage("prune", lambda model: _prune(model, cfg, task, runner),
                            restore=lambda model: restore_pruned(model, state.weights("prune"))))
    stages.append(Stage("quantize", lambda model: _quantize(model, cfg, task, runner),
                        restore=lambda model: quantize_(model, replace(cfg.quantize, bits=state.get("bits"))), checkpoint=False))
    if cfg.quantize.epochs > 0 and task.train is not None:
        stages.append(Stage("fine-tune", lambda model: _fine_tune(model, cfg, task, runner),
                            restore=lambda model: model.load_state_dict(state.weights("fine-tune"))))
    return stages


def _train(model: nn.Module, cfg: PipelineConfig, task: Task, runner: Runner, key: str, epochs: int, lr: float,
           seed: int, weight_decay: float, description: str,
           on_optimizer: Callable[[torch.optim.Optimizer], None] | None = None) -> None:
    """One (re)training run of ``epochs`` epochs, epoch by epoch through the runner."""
    if task.train is None or epochs == 0:
        return
    run_cfg = replace(cfg.train, epochs=epochs, seed=seed, weight_decay=weight_decay)

    def make_trainer() -> Trainer:
        return Trainer(model, task.train, run_cfg, dataset=task.dataset, lr=lr, device=cfg.device, on_optimizer=on_optimizer,
                       progress=task.progress, description=description, loss_fn=task.loss_fn, train_step=task.train_step,
                       teacher=task.teacher)

    runner.epochs(model, key, make_trainer, epochs)


def _prune(model: nn.Module, cfg: PipelineConfig, task: Task, runner: Runner) -> dict[str, Any]:
    """Iterative prune / retrain rounds (section 2): each round's pruning, each retraining epoch and each
    round's end are checkpointed by the runner."""
    prune_cfg = cfg.prune
    assert prune_cfg is not None
    plan = None
    if prune_cfg.method is PruneMethod.AUTO:
        assert task.validate is not None
        reference = runner.once("reference_validation", lambda: task.validate(model))
        plan = SensitivityPlanner(prune_cfg, task.validate, reference, prune_cfg.scan_fractions or AUTO_FRACTIONS)
    progress = runner.state.get("prune", {})
    history: list[dict[str, Any]] = progress.get("history", [])
    pending: dict[str, Any] | None = progress.get("pending")
    for round_index in range(len(history), prune_cfg.rounds):
        if pending is None:
            pending = prune_round_(model, prune_cfg, round_index, task.score, plan)
            if plan is not None:
                pending["plan"] = plan.rounds[round_index]
            if prune_cfg.remove_dead:
                pending["dead_units"] = _remove_dead(model, task, prune_cfg.min_unit_weights)
            runner.checkpoint(model, prune={"history": history, "pending": pending})
        _train(model, cfg, task, runner, f"round{round_index}", prune_cfg.epochs_per_round,
               cfg.train.lr * prune_cfg.lr_factor, cfg.seed + round_index, prune_cfg.weight_decay,
               f"retrain round {round_index + 1}", on_optimizer=lambda opt: keep_pruned_zero(opt, model))
        history.append(finish_round_(model, pending, task.score))
        pending = None
        runner.checkpoint(model, prune={"history": history})
        runner.log(f"[prune] round {round_index + 1}/{prune_cfg.rounds}: kept {history[-1]['kept_pct']:.2f}% of the weights")
    details: dict[str, Any] = {"rounds": history}
    if prune_cfg.remove_dead:
        details["dead_units"] = _remove_dead(model, task, 0)  # exact: nothing retrains after it
    return {**details, "sparsity": sparsity_report(model)}


def _remove_dead(model: nn.Module, task: Task, min_weights: int) -> dict[str, Any]:
    """``remove_dead_units_`` traced on one training input; its report without the per-layer detail."""
    from deepcompress.prune import remove_dead_units_
    from deepcompress.train import eval_batches, split_batch

    inputs, _ = split_batch(next(iter(eval_batches(task.train, 1))))
    if not isinstance(inputs, torch.Tensor):
        raise ConfigError(f"prune.remove_dead: expected tensor inputs to trace the model with, got {type(inputs).__name__}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        report = remove_dead_units_(model, inputs[:1].to(device), min_weights=min_weights)
    finally:
        model.train(was_training)
    return {key: report[key] for key in ("units_removed", "weights_freed", "skipped")}


def _quantize(model: nn.Module, cfg: PipelineConfig, task: Task, runner: Runner) -> dict[str, Any]:
    """k-means weight sharing (section 3); ``bits = "auto"`` first chooses widths on held-out data."""
    qcfg = cfg.quantize
    assert qcfg is not None
    details: dict[str, Any] = {}
    if qcfg.bits == AUTO:
        assert task.validate is not None
        qcfg, scan = choose_bits(model, qcfg, task.validate, progress=task.progress)
        details = {"bits": dict(qcfg.bits), "bits_scan": scan}
    runner.state.update(bits=dict(qcfg.bits) if not isinstance(qcfg.bits, int) else qcfg.bits)
    quantize_(model, qcfg)
    return {"layers": quantization_report(model), **details}


def _fine_tune(model: nn.Module, cfg: PipelineConfig, task: Task, runner: Runner) -> dict[str, Any]:
    """Centroid fine-tuning (section 3.3): the codebooks are the only trainable part of the weights."""
    qcfg = cfg.quantize
    assert qcfg is not None
    _train(model, cfg, task, runner, "finetune", qcfg.epochs, qcfg.lr, cfg.seed + 1000, 0.0, "fine-tune centroids")
    return {"layers": quantization_report(model)}


def _scorer(data: Data | None, device: str | None, metric: Callable[[Any, Any], float] | None) -> Score | None:
    """``model -> score`` on ``data`` (accuracy, or ``metric``), or ``None`` without data."""
    if data is None:
        return None
    return lambda model: float(evaluate_data(model, data, device=device, metric=metric)["score"])


def _narrow_selection(model: nn.Module, cfg: PipelineConfig, filter_fn: FilterFn | None) -> PipelineConfig:
    """Apply the config's ``targets`` / ``ignore`` and ``filter_fn`` to every stage: each stage then
    selects exactly the named layers it selected before that are also in the overall selection."""
    if cfg.targets is None and not cfg.ignore and filter_fn is None:
        return cfg
    chosen = [name for name, _ in select_layers(model, None, cfg.targets, cfg.ignore, filter_fn)]

    def narrow(stage: Any) -> Any:
        if stage is None:
            return None
        names = [n for n, _ in select_layers(model, stage.types, stage.patterns, stage.ignore) if n in chosen]
        if not names:
            raise ConfigError(f"targets / ignore / filter_fn leave no layer for a stage selecting {stage.patterns or 'all'}")
        return replace(stage, patterns=tuple(names), ignore=())

    return replace(cfg, prune=narrow(cfg.prune), quantize=narrow(cfg.quantize))


def uses_validation(cfg: PipelineConfig) -> bool:
    """Whether a stage chooses settings automatically and so needs validation data."""
    auto_prune = cfg.prune is not None and cfg.prune.method is PruneMethod.AUTO
    return auto_prune or (cfg.quantize is not None and cfg.quantize.bits == AUTO)


def split_validation(train: Data, cfg: PipelineConfig) -> tuple[Data, Data]:
    """``(retraining, validation)``: the last ``cfg.validation_images`` training samples, held out of
    retraining for the automatic choices, so the test set never steers a choice. (A reference trained
    on them scores too well on them, which the automatic pruning's ``tolerance``, measured against that
    score, has to absorb.) Works on tensor pairs and on Datasets (as ``Subset``s)."""
    held = cfg.validation_images
    if isinstance(train, tuple):
        images, labels = train
        size = len(images)
    elif isinstance(train, torch.utils.data.Dataset):
        size = len(train)  # type: ignore[arg-type]
    else:
        raise ConfigError("automatic choices need train data as tensors or a Dataset (a DataLoader cannot be split)")
    if held >= size:
        raise ConfigError(
            f"validation_images: {held} held out for automatic choices leaves no training images out of "
            f"{size}; lower validation_images (or raise train_limit)"
        )
    if isinstance(train, tuple):
        return (images[:-held], labels[:-held]), (images[-held:], labels[-held:])
    subset = torch.utils.data.Subset
    return subset(train, range(size - held)), subset(train, range(size - held, size))


def write_verified(
    model: nn.Module, cfg: PipelineConfig, out: Path, reference_score: float | None, score: Score | None,
    *, dataset: str | None = None, arch: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], float | None]:
    """Export the quantized ``model``, write ``out``, read it back and check it; returns (report, score).

    The file's score is measured on the in-memory model (after any float16 rounding) and stored in the
    file; the decoded file must hold bit-identical tensors and score exactly that. The report adds
    every tensor stored as-is and why (:func:`deepcompress.quantize.stored_as_is`).
    """
    model.cpu().eval()
    if cfg.encode.value_dtype == "float16":
        round_values_to_half_(model)
    if cfg.encode.bias_bits is not None:
        share_biases_(model, cfg.encode.bias_bits)
    builtin = arch is not None and arch.get("source") == "builtin" and not arch.get("kwargs")
    name = arch["name"] if arch is not None and arch.get("source") == "builtin" else type(model).__name__
    compressed = export_compressed(model, name, index_bits=choose_index_bits(cfg.encode.index_bits),
                                   arch=None if arch is None or builtin else arch)
    if cfg.encode.extras_dtype == "float16":
        round_extras_to_half_(model, compressed)
    file_score = score(model) if score is not None else None
    compressed.metadata = file_metadata(dataset, reference_score, file_score, cfg.checkpoint)
    bias_dtype = "codebook" if cfg.encode.bias_bits is not None else cfg.encode.value_dtype
    for layer in compressed.layers:
        layer.bias_dtype = bias_dtype if layer.bias is not None else "float32"
        if cfg.encode.index_bits == "auto":
            layer.index_bits = best_index_bits(layer.positions, layer.numel, coder=cfg.encode.coder)
    save(compressed, out, coder=cfg.encode.coder)
    # the file was just written from this model: whatever it declares, reading it back is expected
    decoded = load_compressed(out, max_elements=spec.MAX_TOTAL_SYMBOLS)
    verify_bit_identical(compressed, decoded)
    decoded_model = to_dense_module(decoded, model=plain_copy(model))
    decoded_score = score(decoded_model) if score is not None else None
    if decoded_score != file_score:
        raise AssertionError(f"decoded file scores {decoded_score}, the model it was written from {file_score}")
    report = inspect_file(out)
    report["stored_as_is"] = stored_as_is(model, compressed)
    return report, decoded_score


def plain_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` without weight sharing or pruning masks: the module a user decodes into."""
    clone = copy.deepcopy(model)
    for module in clone.modules():
        if parametrize.is_parametrized(module):
            # deepcopy shares the generated Parametrized* class, and removing a parametrization deletes its
            # property from that class: give the copy a class of its own so the original keeps working
            cls = type(module)
            module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
    strip_quantization_(clone)
    for module in clone.modules():
        if MASK in module._buffers:
            del module._buffers[MASK]
    return clone


def weight_errors(model: nn.Module, reference: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per layer, ``||W - W_ref|| / ||W_ref||`` of the compressed weights against the reference's (the
    report of a run with nothing to score it on)."""
    modules = dict(model.named_modules())
    errors = {}
    for name, ref in reference.items():
        weight = modules[name].weight.detach().cpu()
        norm = float(ref.norm())
        errors[name] = float((weight - ref).norm()) / norm if norm else 0.0
    return errors


@torch.no_grad()
def round_values_to_half_(model: nn.Module) -> nn.Module:
    """Round every weight-shared layer's codebook and bias to float16 values (kept as float32 tensors),
    so the file can store them in half the bytes and still decode bit-identically."""
    for _, module, _ in quantized_layers(model):
        codebook = codebook_of(module)
        codebook.copy_(codebook.half().float())
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor) and bias.dtype == torch.float32:
            bias.copy_(bias.half().float())
    return model


def file_metadata(dataset: str | None, reference_score: float | None, file_score: float | None,
                  checkpoint: str | None) -> dict[str, Any]:
    """What a user of the file needs (the full config and history go to the report), in the order
    earlier files hold it, so the same run writes the same bytes."""
    metadata: dict[str, Any] = {}
    if dataset is not None:
        from deepcompress.data import NORMALIZATION

        metadata["dataset"] = dataset
        if dataset in NORMALIZATION:
            metadata["normalization"] = list(NORMALIZATION[dataset])
    metadata.update(reference_accuracy=reference_score, test_accuracy=file_score)
    if checkpoint:
        metadata["source"] = Path(checkpoint).name
    return metadata


@torch.no_grad()
def round_extras_to_half_(model: nn.Module, compressed: CompressedModel) -> None:
    """Store every float32 tensor of ``compressed.extras`` as float16 and round the model's copy the same
    way, so the file holds half the bytes for them and the model scores what the file decodes to."""
    state = model.state_dict()
    for key, array in compressed.extras.items():
        if array.dtype == np.float32:
            half = array.astype(np.float16)
            state[key].copy_(torch.from_numpy(half.astype(np.float32)))
            compressed.extras[key] = half


def restore_pruned(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load checkpointed weights of a pruned model: attach its masks, then its weights."""
    masks = {k.removesuffix(f".{MASK}"): v for k, v in tensors.items() if k.endswith(f".{MASK}")}
    set_masks_(model, masks)
    model.load_state_dict(tensors)


def choose_index_bits(setting: Any) -> Any:
    """The index width to export with: the configured one, or a placeholder of 5 bits (the paper's
    LeNet/VGG width) that ``"auto"`` then replaces per layer by the width whose coded stream is smallest."""
    return 5 if setting == "auto" else setting


def verify_bit_identical(expected: Any, actual: Any) -> None:
    """Raise ``AssertionError`` unless two CompressedModels hold bit-identical tensors."""
    a, b = expected.state_dict(), actual.state_dict()
    if a.keys() != b.keys():
        raise AssertionError(f"decoded tensors differ in names: {sorted(a.keys() ^ b.keys())}")
    for name in a:
        want, got = np.asarray(a[name]), np.asarray(b[name]).astype(np.asarray(a[name]).dtype)
        if want.shape != got.shape or want.tobytes() != got.tobytes():
            raise AssertionError(f"decoded tensor {name!r} is not bit-identical to the quantized model")


def compress_config(
    cfg: PipelineConfig,
    out: str | Path,
    *,
    data_dir: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stage_cache: str | os.PathLike[str] | None = None,
) -> PipelineResult:
    """Run the pipeline a TOML config describes: build ``cfg.model`` (with ``model_args``), load
    ``cfg.checkpoint``, read ``cfg.dataset``, resolve ``loss`` / ``metric`` / ``train_step``, then
    :func:`compress`. Code a config names (a model factory, data loaders, functions) is run: the
    config is the user's own."""
    from deepcompress.checkpoint import load_state_into, read_state_dict
    from deepcompress.datasets import resolve_dataset
    from deepcompress.sources import build_model_ref, resolve_callable

    if cfg.model is None:
        raise ConfigError("config: missing required key 'model' (a model reference such as 'lenet5' or 'my_net.py:build')")
    base_dir = Path(cfg.base_dir) if cfg.base_dir else None
    model, record = build_model_ref(cfg.model, cfg.model_args, base_dir)
    if cfg.checkpoint:
        checkpoint = (base_dir or Path.cwd()) / cfg.checkpoint
        tensors, _ = read_state_dict(checkpoint, strip_prefix=cfg.strip_prefix, rename=cfg.rename)
        load_state_into(model, tensors, str(checkpoint))
    train = test = None
    if cfg.dataset is not None:
        train, test = resolve_dataset(cfg.dataset, data_dir=data_dir, base_dir=base_dir, image_size=cfg.image_size,
                                      channels=cfg.channels, mean=cfg.mean, std=cfg.std,
                                      train_limit=cfg.train_limit, test_limit=cfg.test_limit)
    functions = {key: resolve_callable(getattr(cfg, key), base_dir, key) if getattr(cfg, key) else None
                 for key in ("loss", "metric", "train_step")}
    return compress(model, cfg, out=out, train=train, test=test, loss_fn=functions["loss"], metric=functions["metric"],
                    train_step=functions["train_step"], dataset=cfg.dataset,
                    arch=record.relative_to(base_dir or Path.cwd(), Path(out).parent).to_dict(), progress=progress, log=log,
                    stage_cache=stage_cache)


def write_report(result: PipelineResult, out: Path) -> Path:
    """Write ``<out stem>.json`` beside the compressed file: per-stage scores and time, per-layer report."""
    from deepcompress.atomic import atomic_write_text

    json_path = out.with_suffix(".json")
    atomic_write_text(json_path, json.dumps(result.to_dict(), indent=2, default=float) + "\n")
    return json_path
