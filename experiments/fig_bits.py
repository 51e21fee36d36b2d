"""Accuracy vs bits per weight, conv and fc layers swept separately (paper Fig. 7), LeNet-5 / MNIST.

For each bit width, only the conv layers (or only the fc layers) are weight-shared by k-means with the
linear init (section 3.1), the others stay fp32; once on the dense reference and once on the reference
pruned to the paper's Table 3 densities. No fine-tuning, so the curves show what the bits alone cost.

Without ``--retrain`` the pruned model is not retrained, so it starts several points below the reference
and the bit widths are partly lost in that gap (-> bits_lenet5.json/.png). With ``--retrain`` it is pruned
to the same densities by iterative prune + retrain (Han 2015, section 3.3) first
(-> bits_lenet5_retrained.json/.png). Resumable (see common.Sweep).
Run: ``python experiments/fig_bits.py [--retrain]``.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from common import (
    Sweep,
    accuracy_on,
    parse_args,
    prune_and_retrain,
    reference,
    test_data,
    train_data,
)

from deepcompress.prune import PruneConfig, prune_, sparsity_report
from deepcompress.quantize import QuantizeConfig, quantize_

PAPER_SPARSITY = {"conv1": 0.34, "conv2": 0.88, "fc1": 0.92, "fc2": 0.81}  # Table 3: 66%, 12%, 8%, 19% kept
GROUPS = {"conv": ("conv*",), "fc": ("fc*",)}
RETRAIN_LR = 0.05 * 0.2  # the reference's rate x the LeNet-5 MNIST config's lr_factor


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--retrain", action="store_true", help="retrain the pruned model before the sweep")


def plot_conv_fc(result: dict[str, list[float]], bit_widths: Sequence[int], title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, values in result.items():
        ax.plot(bit_widths, [100 * v for v in values], "o-" if "conv" in key else "s--", label=key)
    ax.set_xlabel("bits per weight (the other layers stay fp32)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    args = parse_args(__doc__, add_arguments)
    started = time.perf_counter()
    name = "bits_lenet5_retrained" if args.retrain else "bits_lenet5"
    sweep = Sweep(args, name)
    accuracy = accuracy_on(test_data("mnist", args.tiny))
    bit_widths = (2, 6) if args.tiny else tuple(range(1, 9))
    rounds, epochs = (1, 1) if args.tiny else (2, 1)
    dense = reference("lenet5")
    if args.retrain:
        state = "pruned + retrained"
        pruned = sweep.prepared("pruned", "lenet5", lambda: prune_and_retrain(
            copy.deepcopy(dense), PAPER_SPARSITY, train_data("mnist", args.tiny), rounds, epochs, RETRAIN_LR))
    else:
        state = "pruned"
        pruned = prune_(copy.deepcopy(dense), PruneConfig(method="sparsity", sparsity=PAPER_SPARSITY))
    models = {"dense": dense, state: pruned}
    curves = {f"{group} ({state})": (state, group) for state in models for group in GROUPS}
    grid = {f"{curve}/{b}bits": (curve, b) for curve in curves for b in bit_widths}

    def compute(key: str) -> float:
        curve, bits = grid[key]
        state, group = curves[curve]
        return accuracy(quantize_(copy.deepcopy(models[state]), QuantizeConfig(bits=bits, patterns=GROUPS[group])))

    points = sweep.run(list(grid), compute, lambda key, acc: f"{key}: {100 * acc:.2f}%")
    result = {curve: [points[f"{curve}/{b}bits"] for b in bit_widths] for curve in curves}
    plot_conv_fc(result, bit_widths, "LeNet-5 / MNIST: conv vs fc bit widths (paper Fig. 7), "
                 + ("no fine-tuning" if args.retrain else "no retraining"), args.out / f"{name}.png")
    summary: dict[str, Any] = {"bits": list(bit_widths), "accuracy": result, "reference_accuracy": accuracy(dense),
                               "pruned_accuracy": accuracy(pruned)}
    if args.retrain:
        summary.update(sparsity=sparsity_report(pruned), prune_rounds=rounds, epochs_per_round=epochs)
    else:
        summary.update(pruned_sparsity=PAPER_SPARSITY)
    sweep.finish(args.out / f"{name}.json", summary, started)


if __name__ == "__main__":
    main()
