"""The whole Deep Compression pipeline: prune + retrain, quantize + fine-tune, export, encode, verify.

Each stage reports test accuracy, so a user sees what each one cost (paper Fig. 1). The written file
is read back and decoded, and the decoded network must reproduce the quantized network's weights
bit for bit; its accuracy is then measured from the file itself.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from deepcompress.checkpoint import load_checkpoint
from deepcompress.coding import best_index_bits
from deepcompress.config import PipelineConfig
from deepcompress.data import NORMALIZATION, load_split
from deepcompress.decode import to_dense_module
from deepcompress.errors import ConfigError
from deepcompress.format import load_compressed, save
from deepcompress.format.inspect import inspect_file
from deepcompress.prune import (
    PruneMethod,
    SensitivityPlanner,
    iterative_prune_,
    keep_pruned_zero,
    set_masks_,
    sparsity_report,
)
from deepcompress.quantize import (
    choose_bits,
    codebook_of,
    export_compressed,
    quantization_report,
    quantize_,
    quantized_layers,
)
from deepcompress.quantize.config import AUTO
from deepcompress.resume import RunState
from deepcompress.train import evaluate, fit


@dataclass
class StageResult:
    """Accuracy and wall time after one stage."""

    stage: str
    accuracy: float
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class PipelineResult:
    """What ``compress`` did: per-stage results and the written file's report."""

    stages: list[StageResult]
    report: dict[str, Any]
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "stages": [{"stage": s.stage, "accuracy": s.accuracy, "error": 1 - s.accuracy, "seconds": round(s.seconds, 2), **s.details} for s in self.stages],
            "report": self.report,
            "config": self.config,
        }


def compress(
    cfg: PipelineConfig,
    out: str | Path,
    *,
    data_dir: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> PipelineResult:
    """Run the configured pipeline from ``cfg.checkpoint`` and write the compressed file ``out``.

    The run checkpoints after every retraining epoch (see :mod:`deepcompress.resume`); called again
    with the same configuration after an interruption, it resumes and writes the same file.
    """
    if cfg.quantize is None:
        raise ConfigError("config has no [quantize] table; the compressed format stores codebooks, so quantization is required")
    out = Path(out)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"cannot write {out}: directory {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise PermissionError(f"cannot write {out}: directory {out.parent} is not writable")
    state = RunState(out, cfg.to_dict())
    if state.resumed:
        log(f"resuming from {state.dir}")
    model, _ = load_checkpoint(cfg.checkpoint, expect_model=cfg.model)
    train = load_split(cfg.dataset, "train", data_dir).tensors(cfg.train_limit)
    test = load_split(cfg.dataset, "test", data_dir).tensors(cfg.test_limit)
    train, validation = split_validation(train, cfg)
    device = cfg.device
    stages = [StageResult(**s) for s in state.get("stages", [])]

    def accuracy(m: nn.Module) -> float:
        return evaluate(m, test, device=device)["accuracy"]

    def validation_accuracy(m: nn.Module) -> float:
        return evaluate(m, validation, device=device)["accuracy"]

    # the model is still the reference here (a resumed run restores its progress below); only the
    # automatic pruning plan compares against it
    auto_prune = cfg.prune is not None and cfg.prune.method is PruneMethod.AUTO
    reference_validation = validation_accuracy(model) if auto_prune else None

    def record(stage: str, start: float, **details: Any) -> None:
        stages.append(StageResult(stage, accuracy(model), time.perf_counter() - start, details))
        log(f"[{stage}] test accuracy {100 * stages[-1].accuracy:.2f}% (error {100 * (1 - stages[-1].accuracy):.2f}%), {stages[-1].seconds:.0f} s")
        state.update(stages=[asdict(s) for s in stages])

    def train_stage(m: nn.Module, key: str, epochs: int, lr: float, seed: int, weight_decay: float,
                    description: str, on_optimizer: Callable[[torch.optim.Optimizer], None] | None = None) -> None:
        """One (re)training run with a checkpoint after each epoch, resumed from ``key``'s progress."""
        done = state.get(key, {}).get("epochs_done", 0)
        run_cfg = replace(cfg.train, epochs=epochs, seed=seed, weight_decay=weight_decay)
        fit(m, train, run_cfg, dataset=cfg.dataset, lr=lr, device=device, on_optimizer=on_optimizer,
            progress=progress, description=description, start_epoch=done,
            optimizer_state=state.optimizer_state() if done else None,
            on_epoch_end=lambda epoch, opt: state.update(m, opt, **{key: {**state.get(key, {}), "epochs_done": epoch}}))

    def done(stage: str) -> bool:
        return any(s.stage == stage for s in stages)

    if not done("reference"):
        record("reference", time.perf_counter())

    if cfg.prune is not None and not done("prune"):
        start = time.perf_counter()
        prune_cfg = cfg.prune
        progress_so_far = state.get("prune", {})
        rounds_done = progress_so_far.get("rounds_done", 0)
        in_round = f"round{rounds_done}" in state.progress
        if state.resumed and (rounds_done or in_round):
            restore_pruned(model, state.weights())

        def retrain(m: nn.Module, round_index: int) -> None:
            train_stage(m, f"round{round_index}", prune_cfg.epochs_per_round, cfg.train.lr * prune_cfg.lr_factor,
                        cfg.seed + round_index, prune_cfg.weight_decay, f"retrain round {round_index + 1}",
                        on_optimizer=lambda opt: keep_pruned_zero(opt, m))

        plan = SensitivityPlanner(prune_cfg, validation_accuracy, reference_validation) if auto_prune else None

        def round_end(done: int, history: list[dict[str, Any]]) -> None:
            if plan is not None and done - 1 in plan.rounds:
                history[-1]["plan"] = plan.rounds[done - 1]
            full = progress_so_far.get("history", []) + history
            state.update(model, prune={"rounds_done": done, "history": full})

        history = iterative_prune_(model, prune_cfg, retrain=retrain, evaluate=accuracy, progress=progress,
                                   start_round=rounds_done, start_pruned=in_round, on_round_end=round_end, plan=plan)
        record("prune", start, rounds=progress_so_far.get("history", []) + history, sparsity=sparsity_report(model))
        state.update(model, weights_name="pruned")
    elif cfg.prune is not None:
        restore_pruned(model, state.weights("pruned"))

    qcfg = cfg.quantize
    start = time.perf_counter()
    chosen: dict[str, Any] = {}
    if qcfg.bits == AUTO:
        if state.get("auto_bits") is None:
            qcfg, scan = choose_bits(model, qcfg, validation_accuracy, progress=progress)
            state.update(auto_bits=dict(qcfg.bits), bits_scan=scan)
        qcfg = replace(qcfg, bits=state.get("auto_bits"))
        chosen = {"bits": state.get("auto_bits"), "bits_scan": state.get("bits_scan")}
        log(f"[quantize] bits chosen on the validation images: {state.get('auto_bits')}")
    quantize_(model, qcfg)
    if not done("quantize"):
        record("quantize", start, layers=quantization_report(model), **chosen)
    if qcfg.epochs > 0:
        if "finetune" in state.progress:
            model.load_state_dict(state.weights())
        if not done("fine-tune"):
            start = time.perf_counter()
            train_stage(model, "finetune", qcfg.epochs, qcfg.lr, cfg.seed + 1000, 0.0, "fine-tune centroids")
            record("fine-tune", start, layers=quantization_report(model))

    start = time.perf_counter()
    report, file_accuracy = write_verified(model, cfg, out, stages[0].accuracy, accuracy)
    stages.append(StageResult("file", file_accuracy, time.perf_counter() - start, {"file_bytes": report["file_bytes"], "ratio": report["ratio"]}))
    log(f"[file] {out}: {report['file_bytes']} bytes, {report['ratio']:.1f}x smaller than dense fp32, "
        f"test accuracy {100 * file_accuracy:.2f}% (error {100 * (1 - file_accuracy):.2f}%)")
    state.finish()
    return PipelineResult(stages, report, cfg.to_dict())


def uses_validation(cfg: PipelineConfig) -> bool:
    """Whether a stage chooses settings automatically and so needs validation images."""
    auto_prune = cfg.prune is not None and cfg.prune.method is PruneMethod.AUTO
    return auto_prune or (cfg.quantize is not None and cfg.quantize.bits == AUTO)


def split_validation(
    train: tuple[torch.Tensor, torch.Tensor], cfg: PipelineConfig
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``(retraining, validation)`` images: the last ``cfg.validation_images`` training images are held
    out of retraining when automatic choices need them, so the test set never steers a choice. (A
    reference trained on them scores too well on them, which the automatic pruning's ``tolerance``,
    measured against that score, has to absorb.) Without automatic choices nothing is held out."""
    if not uses_validation(cfg):
        return train, (train[0][:0], train[1][:0])
    images, labels = train
    held = cfg.validation_images
    if held >= len(images):
        raise ConfigError(
            f"validation_images: {held} held out for automatic choices leaves no training images out of "
            f"{len(images)}; lower validation_images (or raise train_limit)"
        )
    return (images[:-held], labels[:-held]), (images[-held:], labels[-held:])


def write_verified(
    model: nn.Module, cfg: PipelineConfig, out: Path, reference_accuracy: float, accuracy: Callable[[nn.Module], float]
) -> tuple[dict[str, Any], float]:
    """Export the quantized ``model``, write ``out``, read it back and check it; returns (report, accuracy).

    The file's accuracy is measured on the in-memory model (after any float16 rounding) and stored in
    the file; the decoded file must hold bit-identical arrays and score exactly that accuracy.
    """
    model.cpu().eval()
    if cfg.encode.value_dtype == "float16":
        round_values_to_half_(model)
    file_accuracy = accuracy(model)
    # Only what a user of the file needs travels in it; the full config and history go to the report.
    metadata = {
        "dataset": cfg.dataset,
        "normalization": list(NORMALIZATION[cfg.dataset]),
        "reference_accuracy": reference_accuracy,
        "test_accuracy": file_accuracy,
        "source": Path(cfg.checkpoint).name,
    }
    compressed = export_compressed(model, cfg.model, index_bits=choose_index_bits(cfg.encode.index_bits), metadata=metadata)
    for layer in compressed.layers:
        layer.bias_dtype = cfg.encode.value_dtype if layer.bias is not None else "float32"
        if cfg.encode.index_bits == "auto":
            layer.index_bits = best_index_bits(layer.positions, layer.numel, coder=cfg.encode.coder)
    save(compressed, out, coder=cfg.encode.coder)
    decoded = load_compressed(out)
    verify_bit_identical(compressed, decoded)
    decoded_accuracy = accuracy(to_dense_module(decoded))
    if decoded_accuracy != file_accuracy:
        raise AssertionError(f"decoded file scores {decoded_accuracy}, the model it was written from {file_accuracy}")
    return inspect_file(out), decoded_accuracy


@torch.no_grad()
def round_values_to_half_(model: nn.Module) -> nn.Module:
    """Round every weight-shared layer's codebook and bias to float16 values (kept as float32 tensors),
    so the file can store them in half the bytes and still decode bit-identically."""
    for _, module, _ in quantized_layers(model):
        codebook = codebook_of(module)
        codebook.copy_(codebook.half().float())
        if module.bias is not None:
            module.bias.copy_(module.bias.half().float())
    return model


def restore_pruned(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load checkpointed weights of a pruned model: attach its masks, then its weights."""
    masks = {k.removesuffix(".weight_mask"): v for k, v in tensors.items() if k.endswith(".weight_mask")}
    set_masks_(model, masks)
    model.load_state_dict(tensors)


def choose_index_bits(setting: Any) -> Any:
    """The index width to export with: the configured one, or a placeholder of 5 bits (the paper's
    LeNet/VGG width) that ``"auto"`` then replaces per layer by the width whose coded stream is smallest."""
    return 5 if setting == "auto" else setting


def verify_bit_identical(expected: Any, actual: Any) -> None:
    """Raise ``AssertionError`` unless two CompressedModels hold bit-identical arrays."""
    a, b = expected.state_dict(), actual.state_dict()
    if a.keys() != b.keys():
        raise AssertionError(f"decoded tensors differ in names: {sorted(a.keys() ^ b.keys())}")
    for name in a:
        if not np.array_equal(a[name].view(np.uint32), np.asarray(b[name], dtype=np.float32).view(np.uint32)):
            raise AssertionError(f"decoded tensor {name!r} is not bit-identical to the quantized model")


def write_report(result: PipelineResult, out: Path) -> Path:
    """Write ``<out stem>.json`` beside the compressed file: per-stage accuracy and time, per-layer report."""
    from deepcompress.atomic import atomic_write_text

    json_path = out.with_suffix(".json")
    atomic_write_text(json_path, json.dumps(result.to_dict(), indent=2, default=float) + "\n")
    return json_path
