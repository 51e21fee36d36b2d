"""Accuracy loss vs compression rate (paper Fig. 6) on LeNet-300-100 / MNIST, without retraining.

Four methods applied to the reference, each swept over its knob: pruning only (fp32 survivors stored
as CSR with 5-bit relative indices: 37 bits per entry plus fillers), quantization only (every weight a
b-bit code: b bits per weight plus the codebook), pruning + quantization (the real ``.dcz`` file bytes,
entropy coded), and SVD (each fc layer replaced by its best rank-r approximation: (m + n) r fp32
values). Compression rate = compressed weight bytes / dense fp32 weight bytes (biases left out, as in
the paper's figure). No retraining anywhere, so this shows each method's raw trade-off; the pipeline's
retraining is what moves the curves left (see README results). Each (method, knob) point is computed
from a fresh copy of the reference; resumable (see common.Sweep). Run: ``python experiments/fig_tradeoff.py``.
"""

from __future__ import annotations

import copy
import time

import matplotlib.pyplot as plt
import torch
from common import Sweep, accuracy_on, parse_args, reference, test_data

from deepcompress.coding import count_fillers
from deepcompress.format import to_bytes
from deepcompress.format.inspect import inspect_bytes
from deepcompress.selection import select_layers
from deepcompress.prune import PruneConfig, get_masks, prune_
from deepcompress.quantize import QuantizeConfig, export_compressed, quantize_


def weight_bytes(model: torch.nn.Module) -> int:
    return sum(4 * m.weight.numel() for _, m in select_layers(model))


def pruned_csr_bytes(model: torch.nn.Module, index_bits: int = 5) -> float:
    total = 0.0
    for mask in get_masks(model).values():
        positions = torch.nonzero(mask.flatten()).flatten().numpy()
        total += (positions.size + count_fillers(positions, index_bits)) * (32 + index_bits) / 8
    return total


def low_rank_(model: torch.nn.Module, keep: float) -> int:
    """Replace each fc weight by its rank-r SVD approximation, r = keep x full rank; returns bytes."""
    total = 0
    with torch.no_grad():
        for _, module in select_layers(model, ("linear",)):
            u, s, vh = torch.linalg.svd(module.weight, full_matrices=False)
            r = max(1, round(keep * s.numel()))
            module.weight.copy_((u[:, :r] * s[:r]) @ vh[:r])
            total += 4 * r * sum(module.weight.shape)
    return total


def main() -> None:
    args = parse_args(__doc__)
    started = time.perf_counter()
    sweep = Sweep(args, "tradeoff_lenet300")
    accuracy = accuracy_on(test_data("mnist", args.tiny))
    ref = reference("lenet300")
    dense = weight_bytes(ref)
    base = accuracy(ref)
    sparsities = (0.5, 0.9) if args.tiny else (0.5, 0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.96, 0.97, 0.98)
    knobs: dict[str, tuple[float, ...]] = {
        "pruning": sparsities,
        "quantization": (2, 4) if args.tiny else (1, 2, 3, 4, 5, 6, 8),
        "pruning+quantization": sparsities,
        "svd": (0.1, 0.5) if args.tiny else (0.02, 0.05, 0.1, 0.2, 0.3, 0.5),
    }
    grid = {f"{method}/{knob}": (method, knob) for method, values in knobs.items() for knob in values}

    def compute(key: str) -> dict[str, float]:
        """Compressed size (% of dense) and accuracy loss of one method at one knob setting."""
        method, knob = grid[key]
        model = copy.deepcopy(ref)
        if method == "pruning":
            prune_(model, PruneConfig(method="sparsity", sparsity=knob))
            size = pruned_csr_bytes(model)
        elif method == "pruning+quantization":
            quantize_(prune_(model, PruneConfig(method="sparsity", sparsity=knob)), QuantizeConfig(bits=5))
            report = inspect_bytes(to_bytes(export_compressed(model, "lenet300")))
            size = sum(row["bytes"] - (row["section_bytes"].get("bias", 0)) for row in report["layers"])
        elif method == "quantization":
            quantize_(model, QuantizeConfig(bits=int(knob)))
            size = sum(m.weight.numel() * knob / 8 + 4 * 2**knob for _, m in select_layers(ref))
        else:
            size = low_rank_(model, knob)
        return {"knob": knob, "rate_pct": 100 * size / dense, "accuracy_loss_pct": 100 * (base - accuracy(model))}

    points = sweep.run(list(grid), compute, lambda key, p: f"{key}: {p['rate_pct']:.2f}% of dense, loss {p['accuracy_loss_pct']:.2f} points")
    curves = {method: [points[f"{method}/{knob}"] for knob in values] for method, values in knobs.items()}

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, pts in curves.items():
        ax.plot([p["rate_pct"] for p in pts], [p["accuracy_loss_pct"] for p in pts], "o-", label=method)
    ax.set_xscale("log")
    ax.set_xlabel("compressed size (% of dense fp32 weights)")
    ax.set_ylabel("accuracy loss (points)")
    ax.set_ylim(-0.5, 10)
    ax.set_title("LeNet-300-100 / MNIST, no retraining (paper Fig. 6)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "tradeoff_lenet300.png", dpi=110)
    sweep.finish(args.out / "tradeoff_lenet300.json", {"reference_accuracy": base, "dense_weight_bytes": dense, "curves": curves}, started)


if __name__ == "__main__":
    main()
