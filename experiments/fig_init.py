"""Centroid initialisation vs accuracy across 2-8 bits (paper Fig. 8), on pruned LeNet-300-100 / MNIST.

The reference is pruned to the paper's Table 2 densities (no retraining, so the effect of
the initialisation is not hidden by it), then every layer is weight-shared with each initialisation at
each bit width and evaluated; with ``--finetune-epochs`` the centroids are also fine-tuned (Eq. 3)
before evaluation. Run: ``python experiments/fig_init.py``.
"""

from __future__ import annotations

import copy
import time

import matplotlib.pyplot as plt
from common import accuracy_on, parse_args, reference, test_data, train_data, write_json

from deepcompress.prune import PruneConfig, prune_
from deepcompress.quantize import QuantizeConfig, quantize_
from deepcompress.train import TrainConfig, fit

INITS = ("random", "density", "linear", "kmeans++")
SPARSITY = {"fc1": 0.92, "fc2": 0.91, "fc3": 0.74}  # the paper's Table 2 densities: 8%, 9%, 26% kept


def main() -> None:
    args = parse_args(__doc__)
    started = time.perf_counter()
    bits_range = (2, 4) if args.tiny else tuple(range(2, 9))
    test = test_data("mnist", args.tiny)
    train = train_data("mnist", args.tiny)
    accuracy = accuracy_on(test)
    pruned = prune_(reference("lenet300"), PruneConfig(method="sparsity", sparsity=SPARSITY))
    result = {"pruned_accuracy": accuracy(pruned), "sparsity": SPARSITY, "finetune_epochs": 1, "bits": list(bits_range), "accuracy": {}}
    for init in INITS:
        result["accuracy"][init] = []
        for bits in bits_range:
            model = quantize_(copy.deepcopy(pruned), QuantizeConfig(bits=bits, init=init, seed=0))
            fit(model, train, TrainConfig(epochs=1, lr=0.0005, weight_decay=0.0), progress=False)
            result["accuracy"][init].append(accuracy(model))
            print(f"{init:9s} {bits} bits: {100 * result['accuracy'][init][-1]:.2f}%")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for init in INITS:
        ax.plot(bits_range, [100 * a for a in result["accuracy"][init]], "o-", label=init)
    ax.axhline(100 * result["pruned_accuracy"], color="gray", ls="--", label="pruned, not quantized")
    ax.set_xlabel("bits per weight (all layers)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("LeNet-300-100 / MNIST pruned to 8%: centroid initialisation (paper Fig. 8)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "init_vs_bits_lenet300.png", dpi=110)
    write_json(args.out / "init_vs_bits_lenet300.json", result, started)


if __name__ == "__main__":
    main()
