"""Conv vs fc bits per weight (paper Fig. 7) on a pruned AND retrained LeNet-5 / MNIST.

fig_bits.py prunes to the paper's Table 3 densities without retraining, so its pruned model starts
several points below the reference and the bit widths are lost in that gap. Here the reference is
pruned with iterative prune + retrain (Han 2015, section 3.3) to the same densities first; then, for
each bit width, only the conv layers (or only the fc layers) are weight-shared by k-means with the
linear init (section 3.1), the others stay fp32, and the model is evaluated without centroid
fine-tuning (so the curves show what the bits alone cost on the retrained weights).
Run: ``python experiments/fig_bits_retrained.py``.
"""

from __future__ import annotations

import copy
import time

from common import accuracy_on, parse_args, prune_and_retrain, reference, test_data, train_data, write_json
from fig_bits import PAPER_SPARSITY, plot_conv_fc, sweep_conv_fc

from deepcompress.prune import (
    sparsity_report,
)

RETRAIN_LR = 0.05 * 0.2  # the reference's rate x the LeNet-5 MNIST config's lr_factor


def main() -> None:
    args = parse_args(__doc__)
    started = time.perf_counter()
    bit_widths = (2, 6) if args.tiny else tuple(range(1, 9))
    rounds, epochs = (1, 1) if args.tiny else (2, 1)
    train = train_data("mnist", args.tiny)
    accuracy = accuracy_on(test_data("mnist", args.tiny))

    dense = reference("lenet5")
    pruned = prune_and_retrain(copy.deepcopy(dense), PAPER_SPARSITY, train, rounds, epochs, RETRAIN_LR)
    result = sweep_conv_fc({"dense": dense, "pruned + retrained": pruned}, bit_widths, accuracy)
    plot_conv_fc(result, bit_widths, "LeNet-5 / MNIST: conv vs fc bit widths (paper Fig. 7), no fine-tuning",
                 args.out / "bits_lenet5_retrained.png")
    write_json(args.out / "bits_lenet5_retrained.json", {
        "bits": list(bit_widths), "accuracy": result, "reference_accuracy": accuracy(dense),
        "pruned_accuracy": accuracy(pruned), "sparsity": sparsity_report(pruned), "prune_rounds": rounds,
        "epochs_per_round": epochs}, started)


if __name__ == "__main__":
    main()
