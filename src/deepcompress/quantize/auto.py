"""Automatic per-layer weight bits from a quantization sensitivity scan (paper section 3, Figs. 7-8).

The paper picks 8 bits for conv layers and 5 for fc layers after sweeping bits per layer type (Fig. 7:
conv layers lose accuracy below 4 bits, fc layers below 2). :func:`choose_bits` makes that choice per
layer: each layer alone is weight-shared at every width in ``min_bits..max_bits`` (k-means exactly as
:func:`quantize_` does it, without fine-tuning) and evaluated on a validation set; then the widths are
lowered where they save the most index bits (``nnz * bits``) per unit of accuracy lost, until the
summed drop would exceed ``cfg.budget`` (:func:`deepcompress.budget.greedy_allocate`).

That independent plan assumes the layers' drops add up; at 2-3 bits they do not (a narrow layer's
error feeds the next). ``bits_plan = "joint"`` (:func:`joint_bits`) measures instead: every layer is
quantized at ``max_bits``, then one layer at a time loses one bit -- the one whose step saves the most
coded bytes per unit of validation accuracy lost, measured with every other layer at its current width
-- until any further step would take the accuracy more than ``cfg.budget`` below the unquantized
model's. Savings are counted as the codes' entropy-coded size (``nnz x`` the entropy of the cluster
sizes), so a conv layer with few weights is narrowed only where it pays in bytes, not in nominal bits.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from deepcompress.budget import Option, greedy_allocate, monotone_costs
from deepcompress.progress import progress as progress_bar
from deepcompress.selection import select_layers
from deepcompress.quantize.apply import layer_kmeans, surviving_values
from deepcompress.quantize.config import BitsPlan, QuantizeConfig


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


def coded_bits(labels: np.ndarray) -> float:
    """The entropy-coded size in bits of a layer's cluster indices: ``n x`` the entropy of the cluster sizes."""
    if labels.size == 0:
        return 0.0
    counts = np.bincount(labels)
    p = counts[counts > 0] / labels.size
    return float(-(counts[counts > 0] * np.log2(p)).sum())


def joint_bits(
    model: nn.Module, evaluate: Callable[[nn.Module], float], cfg: QuantizeConfig, progress: bool = False
) -> dict[str, Any]:
    """Per-layer widths chosen one bit at a time with every layer quantized (``bits_plan = "joint"``,
    see the module docstring). The model is restored exactly afterwards. Returns ``{"baseline",
    "floor", "bits": {name: width}, "steps": [{"layer", "bits", "accuracy", "saved_bits"}, ...]}``."""
    layers = select_layers(model, cfg.types, cfg.patterns, cfg.ignore)
    originals = {name: module.weight.detach().clone() for name, module in layers}
    survivors = {name: surviving_values(module) for name, module in layers}
    shared: dict[tuple[str, int], tuple[torch.Tensor, float]] = {}

    def sharing(index: int, name: str, bits: int) -> tuple[torch.Tensor, float]:
        """The layer's surviving values shared at ``bits`` and their coded size (k-means as quantize_ runs it)."""
        if (name, bits) not in shared:
            values = survivors[name][1]
            if values.size:
                km = layer_kmeans(values, bits, cfg, index)
                shared[name, bits] = (torch.from_numpy(km.centroids_[km.labels_]), coded_bits(km.labels_))
            else:
                shared[name, bits] = (torch.empty(0), 0.0)
        return shared[name, bits]

    def apply(index: int, name: str, module: nn.Module, bits: int) -> None:
        positions = survivors[name][0]
        with torch.no_grad():
            module.weight.view(-1)[positions.to(module.weight.device)] = sharing(index, name, bits)[0].to(module.weight)

    baseline = float(evaluate(model))
    floor = baseline - cfg.budget
    widths = {name: cfg.max_bits for name, _ in layers}
    steps: list[dict[str, Any]] = []
    bar = progress_bar(desc="joint bits", total=len(layers) * (cfg.max_bits - cfg.min_bits), enabled=progress)
    try:
        for index, (name, module) in enumerate(layers):
            apply(index, name, module, cfg.max_bits)
        current = float(evaluate(model))  # then each step's own measurement: the model it leaves behind
        while True:
            best: tuple[float, int, float, float] | None = None  # (score, layer index, accuracy, saved)
            for index, (name, module) in enumerate(layers):
                if widths[name] <= cfg.min_bits:
                    continue
                apply(index, name, module, widths[name] - 1)
                accuracy = float(evaluate(model))
                apply(index, name, module, widths[name])
                saved = sharing(index, name, widths[name])[1] - sharing(index, name, widths[name] - 1)[1]
                if accuracy < floor or saved <= 0:
                    continue
                score = saved / max(current - accuracy, 1e-4)
                if best is None or score > best[0]:
                    best = (score, index, accuracy, saved)
            if best is None:
                break
            name, module = layers[best[1]]
            widths[name] -= 1
            apply(best[1], name, module, widths[name])
            current = best[2]
            steps.append({"layer": name, "bits": widths[name], "accuracy": best[2], "saved_bits": best[3]})
            bar.update()
    finally:
        bar.close()
        with torch.no_grad():
            for name, module in layers:
                module.weight.copy_(originals[name])
    return {"baseline": baseline, "floor": floor, "bits": widths, "steps": steps}


def choose_bits(
    model: nn.Module, cfg: QuantizeConfig, evaluate: Callable[[nn.Module], float], progress: bool = False
) -> tuple[QuantizeConfig, dict[str, Any]]:
    """``cfg`` with ``bits="auto"`` resolved to an exact per-layer mapping, and the scan behind it."""
    if cfg.bits_plan is BitsPlan.JOINT:
        plan = joint_bits(model, evaluate, cfg, progress)
        return replace(cfg, bits=plan["bits"]), plan
    scan = bits_scan(model, evaluate, cfg, progress)
    return replace(cfg, bits=plan_bits(scan, cfg.budget)), scan
