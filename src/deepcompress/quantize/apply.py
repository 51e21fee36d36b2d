"""Weight sharing on a whole model: quantize, report, export, strip (Deep Compression section 3).

``quantize_`` runs 1-D k-means per layer on the surviving weights only (no sharing across layers,
as in the paper) and installs :class:`~deepcompress.quantize.shared.SharedWeight`, after which the
codebooks can be fine-tuned with any optimizer. ``export_compressed`` turns the result into the
plain-data :class:`~deepcompress.compressed.CompressedModel` that the encoders and the file format
consume; ``strip_quantization_`` bakes the shared weights back into ordinary ones.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from deepcompress.compressed import CompressedLayer, CompressedModel
from deepcompress.errors import ConfigError
from deepcompress.layers import LAYER_TYPES, layer_kind, per_layer, select_layers
from deepcompress.quantize.config import AUTO, QuantizeConfig, check_bits
from deepcompress.quantize.kmeans import KMeans1D
from deepcompress.quantize.shared import SharedWeight, codebook_of, install_shared_weight_, shared_weight_of

MASK_NAME = "weight_mask"


def survivors(module: nn.Module) -> torch.Tensor:
    """Bool tensor of the module's surviving weights: its ``weight_mask`` buffer, else ``weight != 0``."""
    weight = module.weight
    mask = getattr(module, MASK_NAME, None)
    if mask is None:
        return weight.detach() != 0
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != weight.shape:
        got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ConfigError(f"expected {MASK_NAME} to be a bool tensor of shape {tuple(weight.shape)}, got {got}")
    return mask.to(weight.device)


def surviving_values(module: nn.Module) -> tuple[torch.Tensor, np.ndarray]:
    """Flat positions of ``module``'s surviving weights and their values (float32 numpy, on the CPU)."""
    positions = torch.nonzero(survivors(module).flatten()).flatten()
    return positions, module.weight.detach().flatten()[positions].cpu().numpy()


def layer_kmeans(values: np.ndarray, bits: int, cfg: QuantizeConfig, layer_index: int) -> KMeans1D:
    """The k-means that shares one layer's surviving ``values`` into ``2**bits`` centroids, seeded by
    ``cfg.seed`` and the layer's position among the selected layers (so a scan sees what ``quantize_`` does)."""
    return KMeans1D(2**bits, init=cfg.init, max_iter=cfg.max_iter, tol=cfg.tol, seed=[cfg.seed, layer_index]).fit(values)


def quantize_(model: nn.Module, cfg: QuantizeConfig | None = None) -> nn.Module:
    """Share weights in every selected layer of ``model`` in place; returns ``model``.

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
    layers = select_layers(model, cfg.types, cfg.patterns)
    for index, (name, module) in enumerate(layers):
        bits = check_bits(per_layer(cfg.bits, name, "bits"), f"bits of layer {name!r}")
        weight = module.weight.detach()
        positions, values = surviving_values(module)
        if values.size:
            km = layer_kmeans(values, bits, cfg, index)
            codebook = torch.from_numpy(km.centroids_)
            codes = torch.from_numpy(km.labels_.astype(np.int64))
        else:
            codebook = torch.zeros(0, dtype=torch.float32)
            codes = torch.zeros(0, dtype=torch.int64)
        shared = SharedWeight(weight.shape, positions.cpu(), codes, codebook.numel(), bits, cfg.grad_reduction)
        install_shared_weight_(module, shared, codebook)
    return model


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


def export_compressed(
    model: nn.Module,
    model_name: str,
    index_bits: int | Mapping[str, int] = 5,
    metadata: Mapping[str, Any] | None = None,
) -> CompressedModel:
    """The quantized model as plain data: one :class:`CompressedLayer` per weight-shared layer.

    Each layer carries the float32 codebook exactly as used in forward, the surviving positions (flat,
    row-major) and their codes, and its bias; every other state-dict tensor goes to ``extras`` under
    its ordinary name (parametrization internals and ``weight_mask`` buffers are left out), so
    ``build_model(model_name).load_state_dict(...)`` of ``CompressedModel.state_dict()`` reproduces the
    quantized model's output exactly. ``index_bits`` is the relative-index width (paper section 2:
    5 for LeNet and VGG, 4 for AlexNet), one int or a pattern mapping.
    """
    shared_layers = quantized_layers(model)
    if not shared_layers:
        raise ConfigError("model has no weight-shared layer; run quantize_ before export_compressed")
    layers = []
    for name, module, shared in shared_layers:
        kind = _shared_kind(module)
        if kind is None:
            raise ConfigError(f"layer {name!r}: export supports nn.Linear and nn.Conv2d, got {type(module).__name__}")
        bias = module.bias.detach().cpu().float().numpy() if module.bias is not None else None
        layers.append(
            CompressedLayer(
                name=name,
                kind=kind,
                shape=tuple(shared.shape),
                codebook=codebook_of(module).detach().cpu().float().numpy(),
                positions=shared.positions.cpu().numpy(),
                codes=shared.codes.cpu().numpy(),
                bias=bias,
                weight_bits=shared.bits,
                index_bits=check_bits(per_layer(index_bits, name, "index_bits"), f"index_bits of layer {name!r}"),
                attrs=_conv_attrs(name, module) if kind == "conv2d" else {},
            )
        )
    return CompressedModel(
        model_name=model_name,
        layers=layers,
        extras=_extras(model, {name for name, _, _ in shared_layers}),
        metadata=dict(metadata or {}),
    )


def strip_quantization_(model: nn.Module) -> nn.Module:
    """Replace every shared weight by a plain ``nn.Parameter`` holding ``codebook[code]``; returns ``model``.

    The values are unchanged (zeros stay zeros); the ``weight_mask`` buffer, if any, is kept.
    """
    for _, module, _ in quantized_layers(model):
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model


def _shared_kind(module: nn.Module) -> str | None:
    """``layer_kind`` of a parametrized module (``parametrize`` swaps in a subclass of its class)."""
    return layer_kind(module) or next(
        (kind for kind, cls in LAYER_TYPES.items() if type(module).__bases__[0] is cls), None
    )


def _conv_attrs(name: str, module: nn.Module) -> dict[str, Any]:
    assert isinstance(module, nn.Conv2d)
    if module.padding_mode != "zeros":
        raise ConfigError(f"layer {name!r}: export supports padding_mode 'zeros', got {module.padding_mode!r}")
    padding = module.padding if isinstance(module.padding, str) else list(module.padding)
    return {
        "stride": list(module.stride),
        "padding": padding,
        "dilation": list(module.dilation),
        "groups": int(module.groups),
    }


def _extras(model: nn.Module, shared_names: set[str]) -> dict[str, np.ndarray]:
    """State-dict tensors of the plain model that are not part of an exported layer."""
    extras: dict[str, np.ndarray] = {}
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        names = list(module._parameters) + [
            b for b in module._buffers if b not in module._non_persistent_buffers_set
        ]
        for tensor_name in names:
            if tensor_name == MASK_NAME or module_name in shared_names or ".parametrizations" in f".{module_name}":
                continue
            tensor = getattr(module, tensor_name)
            if tensor is None:
                continue
            array = tensor.detach().cpu()
            extras[prefix + tensor_name] = (array.float() if array.is_floating_point() else array).numpy()
        if parametrize.is_parametrized(module) and module_name not in shared_names:
            for tensor_name in module.parametrizations:
                extras[prefix + tensor_name] = getattr(module, tensor_name).detach().cpu().float().numpy()
    return extras
