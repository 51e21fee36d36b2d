"""Pruning sensitivity of every layer of both LeNets (Han et al. 2015, Fig. 6).

Each layer alone is pruned to each fraction by magnitude, without retraining, and the test accuracy
recorded; the model is restored after each point. One sweep point per (model, layer), each on a fresh
copy of the reference; resumable (see common.Sweep). Run: ``python experiments/fig_sensitivity.py``.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from common import Sweep, accuracy_on, parse_args, reference, test_data

from deepcompress.selection import select_layers
from deepcompress.prune import format_sensitivity, plot_sensitivity, sensitivity_scan

MODELS = ("lenet300", "lenet5")
KINDS = ("linear", "conv2d")


def main() -> None:
    args = parse_args(__doc__)
    started = time.perf_counter()
    sweep = Sweep(args, "sensitivity_mnist")
    fractions = (0.0, 0.5, 0.9) if args.tiny else (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)
    accuracy = accuracy_on(test_data("mnist", args.tiny))
    references = {name: reference(name) for name in MODELS}
    grid = {f"{name}/{layer}": (name, layer) for name in MODELS for layer, _ in select_layers(references[name], KINDS)}

    def compute(key: str) -> dict[str, Any]:
        name, layer = grid[key]
        scan = sensitivity_scan(copy.deepcopy(references[name]), accuracy, fractions=fractions, types=KINDS, patterns=(layer,), progress=False)
        return {"baseline": scan["baseline"], "row": scan["layers"][layer]}

    points = sweep.run(list(grid), compute)
    results = {}
    for name in MODELS:
        keys = [key for key, (model, _) in grid.items() if model == name]
        scan = {"fractions": [float(f) for f in fractions], "layers": {grid[k][1]: points[k]["row"] for k in keys},
                "baseline": points[keys[0]]["baseline"]}
        plot_sensitivity(scan, args.out / f"sensitivity_{name}_mnist.png")
        print(format_sensitivity(scan))
        results[name] = scan
    sweep.finish(args.out / "sensitivity_mnist.json", results, started)


if __name__ == "__main__":
    main()
