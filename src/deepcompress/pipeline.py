"""The whole Deep Compression pipeline: prune + retrain, quantize + fine-tune, export, encode, verify.

Each stage reports test accuracy, so a user sees what each one cost (paper Fig. 1). The written file
is read back and decoded, and the decoded network must reproduce the quantized network's weights
bit for bit; its accuracy is then measured from the file itself.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from deepcompress.checkpoint import load_checkpoint
from deepcompress.coding import best_index_bits
from deepcompress.config import PipelineConfig
from deepcompress.data import NORMALIZATION, load_split
from deepcompress.format import load_compressed, save
from deepcompress.format.inspect import inspect_file
from deepcompress.prune import iterative_prune_, keep_pruned_zero, sparsity_report
from deepcompress.quantize import export_compressed, quantization_report, quantize_
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
    """Run the configured pipeline from ``cfg.checkpoint`` and write the compressed file ``out``."""
    if cfg.quantize is None:
        raise ValueError("config has no [quantize] table; the compressed format stores codebooks, so quantization is required")
    out = Path(out)
    if not out.parent.exists():
        raise FileNotFoundError(f"cannot write {out}: directory {out.parent} does not exist")
    torch.manual_seed(cfg.seed)
    model, _ = load_checkpoint(cfg.checkpoint, expect_model=cfg.model)
    train = load_split(cfg.dataset, "train", data_dir).tensors()
    test = load_split(cfg.dataset, "test", data_dir).tensors()
    device = cfg.device
    stages: list[StageResult] = []

    def record(stage: str, start: float, **details: Any) -> None:
        accuracy = evaluate(model, test, device=device)["accuracy"]
        stages.append(StageResult(stage, accuracy, time.perf_counter() - start, details))
        log(f"[{stage}] test accuracy {100 * accuracy:.2f}% (error {100 * (1 - accuracy):.2f}%), {time.perf_counter() - start:.0f} s")

    record("reference", time.perf_counter())

    if cfg.prune is not None:
        start = time.perf_counter()
        prune_cfg = cfg.prune
        retrain_lr = cfg.train.lr * prune_cfg.lr_factor

        def retrain(m: nn.Module, round_index: int) -> None:
            retrain_cfg = cfg.train.__class__(**{**cfg.train.to_dict(), "epochs": prune_cfg.epochs_per_round, "seed": cfg.seed + round_index, "weight_decay": prune_cfg.weight_decay})
            fit(m, train, retrain_cfg, dataset=cfg.dataset, lr=retrain_lr, device=device,
                on_optimizer=lambda opt: keep_pruned_zero(opt, m), progress=progress, description=f"retrain round {round_index + 1}")

        history = iterative_prune_(model, prune_cfg, retrain=retrain, evaluate=lambda m: evaluate(m, test, device=device)["accuracy"], progress=progress)
        kept = sparsity_report(model)
        record("prune", start, rounds=history, sparsity=kept)

    start = time.perf_counter()
    qcfg = cfg.quantize
    quantize_(model, qcfg)
    record("quantize", start, layers=quantization_report(model))
    if qcfg.epochs > 0:
        start = time.perf_counter()
        tune_cfg = cfg.train.__class__(**{**cfg.train.to_dict(), "epochs": qcfg.epochs, "seed": cfg.seed + 1000, "weight_decay": 0.0})
        fit(model, train, tune_cfg, dataset=cfg.dataset, lr=qcfg.lr, device=device, progress=progress, description="fine-tune centroids")
        record("fine-tune", start, layers=quantization_report(model))

    start = time.perf_counter()
    model.cpu().eval()
    # Only what a user of the file needs travels in it; the full config and history go to the report.
    metadata = {
        "dataset": cfg.dataset,
        "normalization": list(NORMALIZATION[cfg.dataset]),
        "reference_accuracy": stages[0].accuracy,
        "quantized_accuracy": stages[-1].accuracy,
        "source": Path(cfg.checkpoint).name,
    }
    compressed = export_compressed(model, cfg.model, index_bits=choose_index_bits(cfg.encode.index_bits), metadata=metadata)
    if cfg.encode.index_bits == "auto":
        for layer in compressed.layers:
            layer.index_bits = best_index_bits(layer.positions, layer.numel, coder=cfg.encode.coder)
    save(compressed, out, coder=cfg.encode.coder)
    decoded = load_compressed(out)
    verify_bit_identical(compressed, decoded)
    from deepcompress.decode import to_dense_module

    file_model = to_dense_module(decoded)
    file_accuracy = evaluate(file_model, test, device=device)["accuracy"]
    report = inspect_file(out)
    stages.append(StageResult("file", file_accuracy, time.perf_counter() - start, {"file_bytes": report["file_bytes"], "ratio": report["ratio"]}))
    log(f"[file] {out}: {report['file_bytes']} bytes, {report['ratio']:.1f}x smaller than dense fp32, "
        f"test accuracy {100 * file_accuracy:.2f}% (error {100 * (1 - file_accuracy):.2f}%)")
    return PipelineResult(stages, report, cfg.to_dict())


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
