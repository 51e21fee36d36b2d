"""Accuracy loss vs compression rate (paper Fig. 6) on LeNet-300-100 / MNIST, without retraining.

Four methods applied to the reference, each swept over its knob: pruning only (fp32 survivors stored
as CSR with 5-bit relative indices: 37 bits per entry plus fillers), quantization only (every weight a
b-bit code: b bits per weight plus the codebook), pruning + quantization (the real ``.dcz`` file bytes,
entropy coded), and SVD (each fc layer replaced by its best rank-r approximation: (m + n) r fp32
values). Compression rate = compressed weight bytes / dense fp32 weight bytes (biases left out, as in
the paper's figure). No retraining anywhere, so this shows each method's raw trade-off; the pipeline's
retraining is what moves the curves left (see README results). Run: ``python experiments/fig_tradeoff.py``.
"""

from __future__ import annotations

import copy
import time

import matplotlib.pyplot as plt
import torch
from common import accuracy_on, parse_args, reference, test_data, write_json

from deepcompress.coding import count_fillers
from deepcompress.format import to_bytes
from deepcompress.format.inspect import inspect_bytes
from deepcompress.layers import select_layers
from deepcompress.prune import PruneConfig, get_masks, prune_
from deepcompress.quantize import QuantizeConfig, export_compressed, quantize_


def weight_bytes(model: torch.nn.Module) -> int:
    return sum(4 * m.weight.numel() for _, m in select_layers(model))


def pruned_csr_bytes(model: torch.nn.Module, index_bits: int = 5) -> float:
    total = 0.0
    for name, mask in get_masks(model).items():
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
    accuracy = accuracy_on(test_data("mnist", args.tiny))
    ref = reference("lenet300")
    dense = weight_bytes(ref)
    base = accuracy(ref)
    sparsities = (0.5, 0.9) if args.tiny else (0.5, 0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.96, 0.97, 0.98)
    bit_widths = (2, 4) if args.tiny else (1, 2, 3, 4, 5, 6, 8)
    ranks = (0.1, 0.5) if args.tiny else (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
    curves: dict[str, list[dict[str, float]]] = {"pruning": [], "quantization": [], "pruning+quantization": [], "svd": []}

    def point(method: str, model: torch.nn.Module, size: float, knob: float) -> None:
        curves[method].append({"knob": knob, "rate_pct": 100 * size / dense, "accuracy_loss_pct": 100 * (base - accuracy(model))})

    for s in sparsities:
        pruned = prune_(copy.deepcopy(ref), PruneConfig(method="sparsity", sparsity=s))
        point("pruning", pruned, pruned_csr_bytes(pruned), s)
        shared = quantize_(pruned, QuantizeConfig(bits=5))
        report = inspect_bytes(to_bytes(export_compressed(shared, "lenet300")))
        size = sum(row["bytes"] - (row["section_bytes"].get("bias", 0)) for row in report["layers"])
        point("pruning+quantization", shared, size, s)
    for b in bit_widths:
        shared = quantize_(copy.deepcopy(ref), QuantizeConfig(bits=b))
        size = sum(m.weight.numel() * b / 8 + 4 * 2**b for _, m in select_layers(ref))
        point("quantization", shared, size, b)
    for keep in ranks:
        model = copy.deepcopy(ref)
        point("svd", model, low_rank_(model, keep), keep)

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
    write_json(args.out / "tradeoff_lenet300.json", {"reference_accuracy": base, "dense_weight_bytes": dense, "curves": curves}, started)


if __name__ == "__main__":
    main()
