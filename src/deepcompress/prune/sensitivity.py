"""Per-layer pruning sensitivity (Han et al. 2015, section 4.1 and Fig. 6).

Each layer is pruned alone, by magnitude, to a range of fractions without retraining, and the model
is evaluated; the curves show which layers tolerate pruning (fully connected ones) and which do not
(convolutions, the first one most), and guide the per-layer quality or sparsity of the real run.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

from deepcompress.atomic import atomic_write_bytes
from deepcompress.progress import progress as progress_bar
from deepcompress.selection import layer_kind, select_layers
from deepcompress.prune.apply import MASK
from deepcompress.prune.masks import sparsity_mask

DEFAULT_FRACTIONS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def _accuracy(evaluate: Callable[[nn.Module], float], model: nn.Module) -> float:
    value = evaluate(model)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= float(value) <= 1.0):
        raise ValueError(f"sensitivity_scan: evaluate must return an accuracy in [0, 1], got {value!r}")
    return float(value)


def sensitivity_scan(
    model: nn.Module,
    evaluate: Callable[[nn.Module], float],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    types: Sequence[str] | None = None,
    patterns: Sequence[str] | None = None,
    progress: bool = True,
    ignore: Sequence[str] = (),
) -> dict[str, Any]:
    """Accuracy with each selected layer alone pruned to each fraction of its weights (smallest first).

    ``evaluate(model)`` returns an accuracy in [0, 1]. Weights already pruned (a ``weight_mask``) count
    towards a fraction. The model is restored bit-exactly afterwards, training flags included, even if
    ``evaluate`` raises. Returns ``{"fractions": [...], "baseline": acc, "layers": {name: {"kind":
    "linear" | "conv2d" | ..., "accuracy": [acc per fraction]}}}``. ``types``, ``patterns`` and
    ``ignore`` select layers as :func:`deepcompress.selection.select_layers` does.
    """
    fractions = [float(f) for f in fractions]
    if not fractions or any(not (0.0 <= f < 1.0) for f in fractions):
        raise ValueError(f"sensitivity_scan: expected fractions in [0, 1), got {fractions}")
    layers = select_layers(model, types, patterns, ignore)
    modes = [(module, module.training) for module in model.modules()]
    result: dict[str, Any] = {"fractions": fractions, "layers": {}}
    try:
        result["baseline"] = _accuracy(evaluate, model)
        steps = progress_bar(desc="sensitivity", total=len(layers) * len(fractions), enabled=progress)
        for name, module in layers:
            weight = module.weight
            original = weight.detach().clone()
            previous = getattr(module, MASK, None)
            accuracies: list[float] = []
            try:
                for fraction in fractions:
                    mask = sparsity_mask(original, fraction, previous)
                    if bool(mask.all()) or (previous is not None and torch.equal(mask, previous)):
                        accuracies.append(result["baseline"])  # nothing more pruned: the unmodified model
                    else:
                        with torch.no_grad():
                            weight.copy_(original.masked_fill(~mask, 0.0))
                        accuracies.append(_accuracy(evaluate, model))
                    steps.update()
            finally:
                with torch.no_grad():
                    weight.copy_(original)
            result["layers"][name] = {"kind": layer_kind(module), "accuracy": accuracies}
        steps.close()
    finally:
        for module, training in modes:
            module.train(training)
    return result


def format_sensitivity(result: dict[str, Any]) -> str:
    """The scan as a text table: one row per layer, accuracy (%) per fraction pruned."""
    fractions = result["fractions"]
    width = max([len("layer")] + [len(n) for n in result["layers"]])
    header = f"{'layer':<{width}}  {'kind':<6}" + "".join(f"{f'{100 * f:g}%':>8}" for f in fractions)
    lines = [f"baseline accuracy {100 * result['baseline']:.2f}%", header, "-" * len(header)]
    for name, row in result["layers"].items():
        cells = "".join(f"{100 * a:>8.2f}" for a in row["accuracy"])
        lines.append(f"{name:<{width}}  {row['kind']:<6}" + cells)
    return "\n".join(lines)


def plot_sensitivity(result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a PNG like Han 2015 Fig. 6: accuracy vs. fraction pruned, one line per layer, conv and fc
    layers in separate panels. Returns the path."""
    kinds = [k for k in ("conv2d", "linear") if any(r["kind"] == k for r in result["layers"].values())]
    titles = {"conv2d": "convolutional layers", "linear": "fully connected layers"}
    figure = Figure(figsize=(5.0 * max(1, len(kinds)), 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    xs = [100 * f for f in result["fractions"]]
    for i, kind in enumerate(kinds):
        axes = figure.add_subplot(1, len(kinds), i + 1)
        for name, row in result["layers"].items():
            if row["kind"] == kind:
                axes.plot(xs, [100 * a for a in row["accuracy"]], marker="o", markersize=3, label=name)
        axes.axhline(100 * result["baseline"], color="grey", linestyle=":", linewidth=1, label="unpruned")
        axes.set_title(titles[kind])
        axes.set_xlabel("parameters pruned away (%)")
        axes.set_ylabel("accuracy (%)")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
