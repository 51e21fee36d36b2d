"""Centroid initialisation vs bits (paper Fig. 8) on a pruned AND retrained LeNet-300-100 / MNIST.

fig_init.py prunes without retraining, so its one fine-tuning epoch mostly repairs the pruning damage
and the four initialisations end close together. Here the reference is first pruned to the paper's
Table 2 densities with iterative prune + retrain (Han 2015, section 3.3), as in the paper's Fig. 8 setting;
then every layer is weight-shared (k-means from each initialisation, section 3.1) at each bit width and
evaluated twice: right after k-means, and after one epoch of centroid fine-tuning (Eq. 3).
Run: ``python experiments/fig_init_retrained.py``.
"""

from __future__ import annotations

import copy
import time

import matplotlib.pyplot as plt
from common import accuracy_on, parse_args, prune_and_retrain, reference, test_data, train_data, write_json

from deepcompress.prune import (
    sparsity_report,
)
from deepcompress.quantize import QuantizeConfig, quantize_
from deepcompress.train import TrainConfig, fit

INITS = ("random", "density", "linear", "kmeans++")
SPARSITY = {"fc1": 0.92, "fc2": 0.91, "fc3": 0.74}  # the paper's Table 2 densities: 8%, 9%, 26% kept
RETRAIN_LR = 0.05 * 0.3  # the reference's rate x the MNIST configs' lr_factor
FINETUNE_LR = 0.0005  # the MNIST configs' [quantize] lr


def main() -> None:
    args = parse_args(__doc__)
    started = time.perf_counter()
    bits_range = (2, 4) if args.tiny else tuple(range(2, 9))
    rounds, epochs = (1, 1) if args.tiny else (3, 2)
    train = train_data("mnist", args.tiny)
    accuracy = accuracy_on(test_data("mnist", args.tiny))

    pruned = prune_and_retrain(reference("lenet300"), SPARSITY, train, rounds, epochs, RETRAIN_LR)
    result = {
        "pruned_accuracy": accuracy(pruned), "sparsity": sparsity_report(pruned), "prune_rounds": rounds,
        "epochs_per_round": epochs, "finetune_epochs": 1, "bits": list(bits_range),
        "accuracy_kmeans": {}, "accuracy_finetuned": {},
    }
    print(f"pruned + retrained: {100 * result['pruned_accuracy']:.2f}%")
    for init in INITS:
        result["accuracy_kmeans"][init], result["accuracy_finetuned"][init] = [], []
        for bits in bits_range:
            model = quantize_(copy.deepcopy(pruned), QuantizeConfig(bits=bits, init=init, seed=0))
            result["accuracy_kmeans"][init].append(accuracy(model))
            fit(model, train, TrainConfig(epochs=1, weight_decay=0.0), lr=FINETUNE_LR, progress=False)
            result["accuracy_finetuned"][init].append(accuracy(model))
            print(f"{init:9s} {bits} bits: k-means {100 * result['accuracy_kmeans'][init][-1]:.2f}%, "
                  f"fine-tuned {100 * result['accuracy_finetuned'][init][-1]:.2f}%")

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, key, title in ((axes[0], "accuracy_kmeans", "after k-means"), (axes[1], "accuracy_finetuned", "after 1 epoch of centroid fine-tuning")):
        for init in INITS:
            ax.plot(bits_range, [100 * a for a in result[key][init]], "o-", label=init)
        ax.axhline(100 * result["pruned_accuracy"], color="gray", ls="--", label="pruned + retrained, fp32")
        ax.set_xlabel("bits per weight (all layers)")
        ax.set_title(title)
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].legend()
    fig.suptitle("LeNet-300-100 / MNIST pruned to 8% and retrained: centroid initialisation (paper Fig. 8)")
    fig.tight_layout()
    fig.savefig(args.out / "init_vs_bits_lenet300_retrained.png", dpi=110)
    write_json(args.out / "init_vs_bits_lenet300_retrained.json", result, started)


if __name__ == "__main__":
    main()
