"""Accuracy vs bits per weight, conv and fc layers swept separately (paper Fig. 7), LeNet-5 / MNIST.

For each bit width, only the conv layers (or only the fc layers) are weight-shared, the others stay
fp32; once on the dense reference and once on the reference pruned to the paper's Table 3 densities.
No retraining or fine-tuning, so the curves show what the bits alone cost.
Run: ``python experiments/fig_bits.py``.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Callable, Sequence

import matplotlib.pyplot as plt
from common import accuracy_on, parse_args, reference, test_data, write_json
from torch import nn

from deepcompress.prune import PruneConfig, prune_
from deepcompress.quantize import QuantizeConfig, quantize_

PAPER_SPARSITY = {"conv1": 0.34, "conv2": 0.88, "fc1": 0.92, "fc2": 0.81}  # Table 3: 66%, 12%, 8%, 19% kept


def sweep_conv_fc(models: dict[str, nn.Module], bit_widths: Sequence[int], accuracy: Callable[[nn.Module], float]) -> dict[str, list[float]]:
    """Accuracy of each model with only its conv layers, then only its fc layers, weight-shared at each width."""
    result: dict[str, list[float]] = {}
    for state, model in models.items():
        for group, patterns in (("conv", ("conv*",)), ("fc", ("fc*",))):
            key = f"{group} ({state})"
            result[key] = [accuracy(quantize_(copy.deepcopy(model), QuantizeConfig(bits=b, patterns=patterns))) for b in bit_widths]
            print(key, [f"{100 * a:.2f}" for a in result[key]])
    return result


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
    args = parse_args(__doc__)
    started = time.perf_counter()
    accuracy = accuracy_on(test_data("mnist", args.tiny))
    bit_widths = (2, 6) if args.tiny else tuple(range(1, 9))
    models = {"dense": reference("lenet5")}
    models["pruned"] = prune_(copy.deepcopy(models["dense"]), PruneConfig(method="sparsity", sparsity=PAPER_SPARSITY))
    result = sweep_conv_fc(models, bit_widths, accuracy)
    plot_conv_fc(result, bit_widths, "LeNet-5 / MNIST: conv vs fc bit widths (paper Fig. 7), no retraining", args.out / "bits_lenet5.png")
    write_json(args.out / "bits_lenet5.json", {"bits": list(bit_widths), "accuracy": result,
               "reference_accuracy": accuracy(models["dense"]), "pruned_accuracy": accuracy(models["pruned"]),
               "pruned_sparsity": PAPER_SPARSITY}, started)


if __name__ == "__main__":
    main()
