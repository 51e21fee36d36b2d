"""Automatic per-layer weight bits from a quantization sensitivity scan (paper section 3, Figs. 7-8).

The paper picks 8 bits for conv layers and 5 for fc layers after sweeping bits per layer type (Fig. 7:
conv layers lose accuracy below 4 bits, fc layers below 2). :func:`choose_bits` makes that choice per
layer: each layer alone is weight-shared at every width in ``min_bits..max_bits`` (k-means exactly as
:func:`quantize_` does it, without fine-tuning) and evaluated on a validation set; then the widths are
lowered where they save the most index bits (``nnz * bits``) per unit of accuracy lost, until the
summed drop would exceed ``cfg.budget`` (:func:`deepcompress.budget.greedy_allocate`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import torch
from torch import nn

from deepcompress.budget import Option, greedy_allocate, monotone_costs
from deepcompress.progress import progress as progress_bar
from deepcompress.selection import select_layers
from deepcompress.quantize.apply import layer_kmeans, surviving_values
from deepcompress.quantize.config import QuantizeConfig


def bits_scan(
    model: nn.Module, evaluate: Callable[[nn.Module], float], cfg: QuantizeConfig, progress: bool = False
) -> dict[str, Any]:
    """Accuracy with each selected layer alone weight-shared at each width in ``cfg.min_bits..cfg.max_bits``.

    The model is restored exactly afterwards. Returns ``{"bits": [...], "baseline": acc, "layers":
    {name: {"nnz": surviving weights, "accuracy": [acc per width]}}}``.
    """
    widths = list(range(cfg.min_bits, cfg.max_bits + 1))
    layers = select_layers(model, cfg.types, cfg.patterns, cfg.ignore)
    result: dict[str, Any] = {"bits": widths, "baseline": float(evaluate(model)), "layers": {}}
    steps = progress_bar(desc="bits scan", total=len(layers) * len(widths), enabled=progress)
    for index, (name, module) in enumerate(layers):
        weight = module.weight
        original = weight.detach().clone()
        positions, values = surviving_values(module)
        accuracies: list[float] = []
        try:
            for bits in widths:
                if values.size:
                    km = layer_kmeans(values, bits, cfg, index)
                    shared = torch.from_numpy(km.centroids_[km.labels_]).to(original.device, original.dtype)
                    with torch.no_grad():
                        weight.view(-1)[positions.to(weight.device)] = shared
                accuracies.append(float(evaluate(model)))
                steps.update()
        finally:
            with torch.no_grad():
                weight.copy_(original)
        result["layers"][name] = {"nnz": int(values.size), "accuracy": accuracies}
    steps.close()
    return result


def plan_bits(scan: dict[str, Any], budget: float) -> dict[str, int]:
    """Per-layer widths from a :func:`bits_scan`: start at the widest, narrow within ``budget``."""
    widths = scan["bits"][::-1]  # widest first: options of increasing saving
    options: dict[str, list[Option]] = {}
    for name, row in scan["layers"].items():
        costs = monotone_costs([scan["baseline"] - a for a in row["accuracy"][::-1]])
        options[name] = [Option(row["nnz"] * (widths[0] - b), c) for b, c in zip(widths, costs)]
    chosen = greedy_allocate(options, budget)
    return {name: widths[index] for name, index in chosen.items()}


def choose_bits(
    model: nn.Module, cfg: QuantizeConfig, evaluate: Callable[[nn.Module], float], progress: bool = False
) -> tuple[QuantizeConfig, dict[str, Any]]:
    """``cfg`` with ``bits="auto"`` resolved to an exact per-layer mapping, and the scan behind it."""
    scan = bits_scan(model, evaluate, cfg, progress)
    return replace(cfg, bits=plan_bits(scan, cfg.budget)), scan
