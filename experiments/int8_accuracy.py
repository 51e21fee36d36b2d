"""What the opt-in int8 batch-1 kernel (format "int8") costs in accuracy on real networks.

For each committed network -- LeNet-300-100 and LeNet-5 on the MNIST test set, the ResNet-18 of
``resnet18_fashion.dcz`` on the Fashion-MNIST test set (3 channels) -- the sparse runtime
(``to_sparse_module``) classifies the whole test set twice:

* ``fp32``: every compressed Linear a :class:`SparseCodebookLinear` on its fp32 kernels;
* ``int8``: every compressed Linear rebuilt with ``format="int8"``, whose int8 kernel runs at batch 1
  only, so each such layer is called once per image inside the batched loop (:class:`PerSample`):
  the int8 kernel computes every fc output behind the predictions.

Convolutions stay fp32 in both (decoded once, ``conv_mode="dense"``: the int8 kernel is fc-only), so
the difference is the fc layers' int8 rounding alone. Writes ``int8_accuracy.json`` with the machine,
each network's accuracy both ways, the number of test images whose prediction differs, and the
largest logit difference. Run: ``python experiments/int8_accuracy.py`` (``--tiny``: 300 images).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from common import RESULTS, Sweep, parse_args
from torch import nn

from deepcompress.datasets import resolve_dataset
from deepcompress.format import load_compressed
from deepcompress.perf.machine import machine_info, set_threads
from deepcompress.runtime import SparseCodebookLinear, simd, to_sparse_module
from deepcompress.runtime.plan import Format

# name: (committed file, dataset, input channels)
NETWORKS: dict[str, tuple[str, str, int | None]] = {
    "lenet300": ("lenet300_mnist.dcz", "mnist", None),
    "lenet5": ("lenet5_mnist.dcz", "mnist", None),
    "resnet18": ("resnet18_fashion.dcz", "fashion", 3),
}
BATCH = 500


class PerSample(nn.Module):
    """Runs ``inner`` on one row of its input at a time, so a batch-1-only kernel computes every row."""

    def __init__(self, inner: SparseCodebookLinear) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).contiguous()
        out = torch.cat([self.inner(rows[i : i + 1]) for i in range(rows.shape[0])])
        return out.reshape(*x.shape[:-1], out.shape[-1])


def int8_linears_(model: nn.Module, cm: Any) -> list[dict[str, Any]]:
    """Swap every compressed Linear of ``model`` for an int8 one called per sample; describe each."""
    layers = {layer.name: layer for layer in cm.layers}
    swapped = []
    for name, module in list(model.named_modules()):
        if not isinstance(module, SparseCodebookLinear):
            continue
        int8 = SparseCodebookLinear.from_compressed(layers[name], backend="simd", format="int8")
        assert int8.format is Format.INT8
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, PerSample(int8))
        scale = int8._layout.scale  # type: ignore[union-attr]
        swapped.append({"layer": name, "shape": list(layers[name].shape), "nnz": layers[name].nnz,
                        "codebook": int(layers[name].codebook.size), "weight_scale": scale})
    return swapped


@torch.no_grad()
def logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(images[s : s + BATCH]) for s in range(0, len(images), BATCH)])


def measure(name: str, tiny: bool) -> dict[str, Any]:
    """Accuracy of network ``name`` with fp32 and with int8 fc layers, on the same images."""
    file, dataset, channels = NETWORKS[name]
    path = RESULTS / file
    cm = load_compressed(path)
    _, (images, labels) = resolve_dataset(dataset, channels=channels, test_limit=300 if tiny else None)

    def build() -> nn.Module:
        return to_sparse_module(cm, trust_code=True, base_dir=path.resolve().parent)

    started = time.perf_counter()
    fp32 = logits(build(), images)
    fp32_seconds = time.perf_counter() - started
    model = build()
    layers = int8_linears_(model, cm)
    started = time.perf_counter()
    int8 = logits(model, images)
    int8_seconds = time.perf_counter() - started
    pred_fp32, pred_int8 = fp32.argmax(1), int8.argmax(1)
    correct_fp32, correct_int8 = int((pred_fp32 == labels).sum()), int((pred_int8 == labels).sum())
    return {
        "file": str(Path("experiments/results") / file),
        "dataset": dataset,
        "images": len(labels),
        "recorded_accuracy": cm.metadata.get("test_accuracy"),
        "correct_fp32": correct_fp32,
        "correct_int8": correct_int8,
        "accuracy_fp32": correct_fp32 / len(labels),
        "accuracy_int8": correct_int8 / len(labels),
        "differing_predictions": int((pred_fp32 != pred_int8).sum()),
        "max_logit_diff": float((int8 - fp32).abs().max()),
        "max_logit": float(fp32.abs().max()),
        "int8_layers": layers,
        "seconds": {"fp32": fp32_seconds, "int8": int8_seconds},
    }


def main() -> None:
    args = parse_args(__doc__)
    missing = simd.int8_missing()
    if missing is not None:
        raise SystemExit(f"the int8 kernel cannot run here: it needs {missing}")
    started = time.perf_counter()
    threads = set_threads(os.cpu_count() or 1)
    sweep = Sweep(args, "int8_accuracy")
    points = sweep.run(list(NETWORKS), lambda name: measure(name, args.tiny),
                       lambda name, r: f"{name}: fp32 {r['accuracy_fp32']:.4f}, int8 {r['accuracy_int8']:.4f}, "
                                       f"{r['differing_predictions']} of {r['images']} predictions differ")
    sweep.finish(args.out / "int8_accuracy.json", {
        "experiment": "accuracy of the sparse runtime with fp32 vs int8 fc layers (convolutions fp32 in both)",
        "int8": "weights: codebook rounded to int8, one scale per layer (max|c|/127); inputs: rounded to int8 "
                "per block of 64, scale max|x|/127, at call time; products with AVX-512 VNNI",
        "machine": machine_info(threads),
        "load_average_1min": os.getloadavg()[0],
        "networks": points,
    }, started)


if __name__ == "__main__":
    main()
