"""Pruning sensitivity of every layer of both LeNets (Han et al. 2015, Fig. 6).

Each layer alone is pruned to each fraction by magnitude, without retraining, and the test accuracy
recorded; the model is restored after each point. Run: ``python experiments/fig_sensitivity.py``.
"""

from __future__ import annotations

import time

from common import accuracy_on, parse_args, reference, test_data, write_json

from deepcompress.prune import format_sensitivity, plot_sensitivity, sensitivity_scan


def main() -> None:
    args = parse_args(__doc__)
    started = time.perf_counter()
    fractions = (0.0, 0.5, 0.9) if args.tiny else (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)
    results = {}
    for name in ("lenet300", "lenet5"):
        scan = sensitivity_scan(reference(name), accuracy_on(test_data("mnist", args.tiny)), fractions=fractions, progress=False)
        plot_sensitivity(scan, args.out / f"sensitivity_{name}_mnist.png")
        print(format_sensitivity(scan))
        results[name] = scan
    write_json(args.out / "sensitivity_mnist.json", results, started)


if __name__ == "__main__":
    main()
