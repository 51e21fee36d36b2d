"""Centroid initialisation vs accuracy across 2-8 bits (paper Fig. 8), on pruned LeNet-300-100 / MNIST.

The reference is pruned to the paper's Table 2 densities, then every layer is weight-shared (k-means
from each initialisation, section 3.1) at each bit width, its centroids fine-tuned for one epoch (Eq. 3)
and the model evaluated.

Without ``--retrain`` the pruned model is not retrained, so the fine-tuning epoch mostly repairs the
pruning damage and the initialisations end close together (-> init_vs_bits_lenet300.json/.png). With
``--retrain`` it is pruned by iterative prune + retrain (Han 2015, section 3.3), as in the paper's Fig. 8
setting, and each point is also evaluated right after k-means, before fine-tuning
(-> init_vs_bits_lenet300_retrained.json/.png). Resumable (see common.Sweep).
Run: ``python experiments/fig_init.py [--retrain]``.
"""

from __future__ import annotations

import argparse
import copy
import time
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
from deepcompress.train import TrainConfig, fit

INITS = ("random", "density", "linear", "kmeans++")
SPARSITY = {"fc1": 0.92, "fc2": 0.91, "fc3": 0.74}  # the paper's Table 2 densities: 8%, 9%, 26% kept
RETRAIN_LR = 0.05 * 0.3  # the reference's rate x the MNIST configs' lr_factor
FINETUNE_LR = 0.0005  # the MNIST configs' [quantize] lr


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--retrain", action="store_true", help="retrain the pruned model before the sweep")


def plot(result: dict[str, Any], panels: dict[str, str], baseline: str, title: str, path: Path) -> None:
    """One panel per result key in ``panels`` (key -> panel title), a line per init, the fp32 model dashed."""
    fig, axes = plt.subplots(1, len(panels), figsize=(7 if len(panels) == 1 else 12, 4.5), sharey=True, squeeze=False)
    for ax, (key, panel_title) in zip(axes[0], panels.items()):
        for init in INITS:
            ax.plot(result["bits"], [100 * a for a in result[key][init]], "o-", label=init)
        ax.axhline(100 * result["pruned_accuracy"], color="gray", ls="--", label=baseline)
        ax.set_xlabel("bits per weight (all layers)")
        ax.set_title(panel_title)
    axes[0, 0].set_ylabel("test accuracy (%)")
    axes[0, -1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    args = parse_args(__doc__, add_arguments)
    started = time.perf_counter()
    name = "init_vs_bits_lenet300_retrained" if args.retrain else "init_vs_bits_lenet300"
    sweep = Sweep(args, name)
    bits_range = (2, 4) if args.tiny else tuple(range(2, 9))
    rounds, epochs = (1, 1) if args.tiny else (3, 2)
    train = train_data("mnist", args.tiny)
    accuracy = accuracy_on(test_data("mnist", args.tiny))
    if args.retrain:
        pruned = sweep.prepared("pruned", "lenet300", lambda: prune_and_retrain(reference("lenet300"), SPARSITY, train, rounds, epochs, RETRAIN_LR))
    else:
        pruned = prune_(reference("lenet300"), PruneConfig(method="sparsity", sparsity=SPARSITY))
    pruned_accuracy = accuracy(pruned)
    print(f"pruned{' + retrained' if args.retrain else ''}: {100 * pruned_accuracy:.2f}%")
    grid = {f"{init}/{bits}bits": (init, bits) for init in INITS for bits in bits_range}

    def compute(key: str) -> dict[str, float]:
        init, bits = grid[key]
        model = quantize_(copy.deepcopy(pruned), QuantizeConfig(bits=bits, init=init, seed=0))
        point = {"kmeans": accuracy(model)} if args.retrain else {}
        fit(model, train, TrainConfig(epochs=1, weight_decay=0.0), lr=FINETUNE_LR, progress=False)
        return {**point, "finetuned": accuracy(model)}

    def describe(key: str, point: dict[str, float]) -> str:
        return f"{key}: " + ", ".join(f"{stage} {100 * acc:.2f}%" for stage, acc in point.items())

    points = sweep.run(list(grid), compute, describe)

    def curves(stage: str) -> dict[str, list[float]]:
        return {init: [points[f"{init}/{bits}bits"][stage] for bits in bits_range] for init in INITS}

    if args.retrain:
        result = {"pruned_accuracy": pruned_accuracy, "sparsity": sparsity_report(pruned), "prune_rounds": rounds,
                  "epochs_per_round": epochs, "finetune_epochs": 1, "bits": list(bits_range),
                  "accuracy_kmeans": curves("kmeans"), "accuracy_finetuned": curves("finetuned")}
        plot(result, {"accuracy_kmeans": "after k-means", "accuracy_finetuned": "after 1 epoch of centroid fine-tuning"},
             "pruned + retrained, fp32", "LeNet-300-100 / MNIST pruned to 8% and retrained: centroid initialisation (paper Fig. 8)",
             args.out / f"{name}.png")
    else:
        result = {"pruned_accuracy": pruned_accuracy, "sparsity": SPARSITY, "finetune_epochs": 1, "bits": list(bits_range),
                  "accuracy": curves("finetuned")}
        plot(result, {"accuracy": "after 1 epoch of centroid fine-tuning"}, "pruned, not quantized",
             "LeNet-300-100 / MNIST pruned to 8%: centroid initialisation (paper Fig. 8)", args.out / f"{name}.png")
    sweep.finish(args.out / f"{name}.json", result, started)


if __name__ == "__main__":
    main()
