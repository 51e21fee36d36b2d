"""Weight sharing on a whole model: quantize, report, strip (Deep Compression section 3).

``quantize_`` runs 1-D k-means per layer on the surviving weights only (no sharing across layers,
as in the paper) and installs :class:`~deepcompress.quantize.shared.SharedWeight`, after which the
codebooks can be fine-tuned with any optimizer (:mod:`deepcompress.quantize.export` turns the result
into plain data); ``strip_quantization_`` bakes the shared weights back into ordinary ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from deepcompress.errors import ConfigError
from deepcompress.prune.apply import MASK
from deepcompress.prune.masks import CHUNK
from deepcompress.quantize.config import AUTO, QuantizeConfig, check_bits
from deepcompress.quantize.kmeans import KMeans1D
from deepcompress.quantize.shared import (
    SharedWeight,
    assign_clusters_,
    install_shared_weight_,
    position_dtype,
    shared_weight_of,
    tie_shared_weight_,
    tied_owner,
)
from deepcompress.selection import FilterFn, per_layer, select_layers, tied_layers


def _check_mask(mask: object, weight: torch.Tensor) -> None:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != weight.shape:
        got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ConfigError(f"expected {MASK} to be a bool tensor of shape {tuple(weight.shape)}, got {got}")


def surviving_values(module: nn.Module) -> tuple[torch.Tensor, np.ndarray]:
    """Flat positions of ``module``'s surviving weights (its ``weight_mask``, else its nonzeros) and
    their values: positions int32 where they fit (see :func:`position_dtype`), on the weight's device;
    values float32 numpy, on the CPU.

    Two chunked passes (count, then fill) write straight into the results, so nothing weight-sized
    is made (``torch.nonzero`` of a whole layer's mask would return int64 pairs, ``weight != 0`` a
    byte per weight) and no list of pieces is concatenated into a second copy.
    """
    weight = module.weight.detach()
    mask = getattr(module, MASK, None)
    if mask is not None:
        _check_mask(mask, weight)
        mask = mask.to(weight.device).reshape(-1)
    flat = weight.reshape(-1)

    def kept(start: int) -> torch.Tensor:
        part = flat[start : start + CHUNK]
        return part != 0 if mask is None else mask[start : start + CHUNK]

    starts = range(0, flat.numel(), CHUNK)
    count = sum(int(kept(start).sum()) for start in starts)
    positions = torch.empty(count, dtype=position_dtype(flat.numel()), device=weight.device)
    values = np.empty(count, dtype=np.float32)
    filled = 0
    for start in starts:
        local = torch.nonzero(kept(start)).flatten()
        end = filled + local.numel()
        positions[filled:end] = local + start
        values[filled:end] = flat[start + local].float().cpu().numpy()
        filled = end
    return positions, values


def layer_kmeans(values: np.ndarray, bits: int, cfg: QuantizeConfig, layer_index: int) -> KMeans1D:
    """The k-means that shares one layer's surviving ``values`` into ``2**bits`` centroids, seeded by
    ``cfg.seed`` and the layer's position among the selected layers (so a scan sees what ``quantize_`` does)."""
    return KMeans1D(2**bits, init=cfg.init, max_iter=cfg.max_iter, tol=cfg.tol, seed=[cfg.seed, layer_index]).fit(values)


def quantize_(model: nn.Module, cfg: QuantizeConfig | None = None, *, filter_fn: FilterFn | None = None) -> nn.Module:
    """Share weights in every selected layer of ``model`` in place; returns ``model``.

    Layers are selected from ``cfg.types``, ``cfg.patterns``, ``cfg.ignore`` and ``filter_fn(module,
    name)`` (:func:`~deepcompress.selection.select_layers`). A module whose weight is tied to a
    selected layer's shares that layer's codebook Parameter, so the tie survives fine-tuning.

    Per layer: k-means with ``2**bits`` clusters on the surviving weights (``cfg.init``, seeded by
    ``cfg.seed`` and the layer's position), then ``weight = codebook[code]`` with the codebook the
    only trainable part of the weight. A layer with fewer distinct surviving values than ``2**bits``
    gets one cluster per value (see :func:`quantization_report`); a fully pruned layer gets an empty
    codebook and stays all zero.
    """
    cfg = cfg or QuantizeConfig()
    if cfg.bits == AUTO:
        raise ConfigError(
            "quantize_: bits 'auto' must first be resolved to per-layer widths with "
            "deepcompress.quantize.choose_bits(model, cfg, evaluate) (the pipeline does this)"
        )
    already = [name for name, _, _ in quantized_layers(model)]
    if already:
        raise ConfigError(f"layers {already} are already quantized; call strip_quantization_ first")
    layers = select_layers(model, cfg.types, cfg.patterns, cfg.ignore, filter_fn)
    tied = tied_layers(model)
    modules = dict(model.named_modules())
    for index, (name, module) in enumerate(layers):
        bits = check_bits(per_layer(cfg.bits, name, "bits"), f"bits of layer {name!r}")
        shared = _share_layer_(module, bits, cfg, index)
        for follower in (n for n, owner in tied.items() if owner == name):
            tie_shared_weight_(modules[follower], shared)
    return model


def _share_layer_(module: nn.Module, bits: int, cfg: QuantizeConfig, index: int) -> SharedWeight:
    """Share ``module``'s weight: k-means on its surviving values, then ``weight = codebook[code]``.

    The sharing is installed before k-means runs, with every survivor in one provisional cluster:
    installing frees the dense weight (its Parameter becomes the codebook), so k-means and its
    temporaries never sit beside it (VGG-16's fc6 is 411 MB; the k-means of its 4.1M survivors
    needs about 150 MB).
    """
    positions, values = surviving_values(module)
    provisional = min(1, int(positions.numel()))
    codes = torch.zeros(positions.shape, dtype=torch.uint8, device=positions.device)
    shared = SharedWeight(module.weight.shape, positions, codes, provisional, bits, cfg.grad_reduction)
    del positions, codes
    install_shared_weight_(module, shared, torch.zeros(provisional))
    if values.size:
        km = layer_kmeans(values, bits, cfg, index)
        del values
        assign_clusters_(module, torch.from_numpy(km.labels_), torch.from_numpy(km.centroids_))
    return shared


def quantized_layers(model: nn.Module) -> list[tuple[str, nn.Module, SharedWeight]]:
    """``(name, module, parametrization)`` of every weight-shared layer, in definition order."""
    out = []
    for name, module in model.named_modules():
        shared = shared_weight_of(module)
        if shared is not None:
            out.append((name, module, shared))
    return out


def quantization_report(model: nn.Module) -> list[dict[str, Any]]:
    """Per weight-shared layer: bits, clusters, clusters in use, distinct nonzero weights, kept weights."""
    rows = []
    for name, module, shared in quantized_layers(model):
        weight = module.weight.detach()
        nonzero = weight[weight != 0]
        numel = weight.numel()
        kept = int(shared.positions.numel())
        rows.append(
            {
                "layer": name,
                "bits": shared.bits,
                "clusters": shared.n_clusters,
                "clusters_used": int(torch.unique(shared.codes).numel()),
                "distinct_nonzero": int(torch.unique(nonzero).numel()),
                "numel": numel,
                "kept": kept,
                "kept_pct": 100.0 * kept / numel if numel else 0.0,
            }
        )
    return rows


def strip_quantization_(model: nn.Module) -> nn.Module:
    """Replace every shared weight by a plain ``nn.Parameter`` holding ``codebook[code]``; returns ``model``.

    The values are unchanged (zeros stay zeros); the ``weight_mask`` buffer, if any, is kept; a module
    tied to a weight-shared layer is tied again to that layer's new Parameter.
    """
    owners = {id(shared): module for _, module, shared in quantized_layers(model)}
    followers = [(m, tied_owner(m)) for m in model.modules() if tied_owner(m) is not None]
    for module in owners.values():
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    for module, shared in followers:
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        module.weight = owners[id(shared)].weight
    return model
