"""Build a module that runs a :class:`CompressedModel` from its compressed form (the counterpart of
:mod:`deepcompress.runtime.dense`).

The module is the caller's, or the file's architecture (:func:`deepcompress.runtime.dense.build_architecture`).
The uncompressed tensors (``extras``: uncompressed layers, normalisation statistics) are loaded
strictly first; then every compressed layer is swapped, by qualified name, for the sparse module its
handler builds (:mod:`deepcompress.handlers`: Linear, Hugging Face Conv1D, Embedding, and by choice
Conv2d), or, for kinds without one, decoded once into the module itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from deepcompress.choices import Choice
from deepcompress.compressed import CompressedLayer, CompressedModel
from deepcompress.errors import CheckpointError
from deepcompress.handlers import handler_for
from deepcompress.runtime.dense import build_architecture
from deepcompress.runtime.dispatch import Backend
from deepcompress.runtime.plan import Format


class ConvMode(Choice):
    """How compressed convolutions run: ``dense`` decodes the kernel once at load and calls
    ``F.conv2d``; ``sparse`` runs them from the packed kernel (:class:`SparseCodebookConv2d`: at batch 1
    on the C extension a direct stride-1 convolution without an im2col matrix, else im2col times the
    packed kernel; grouped convolutions are decoded by the handler). ``sparse`` pays at batch 1:
    benchmarks/inference.py measured whole-network batch-1 latency 2.0x (LeNet-5) and 2.1x
    (ResNet-18, 95% pruned) faster than the dense network on a 2-core Zen 4 (cold cache, heavily
    loaded machine). Dense stays the default because at large batches im2col's copy and the dense
    GEMM's efficiency win (LeNet-5 at batch 64 measured 3-5x slower sparse with the im2col path)."""

    DENSE = "dense"
    SPARSE = "sparse"


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _check_layer(layer: CompressedLayer, module: nn.Module) -> None:
    handler = handler_for(module)
    if handler is None or handler.kind != layer.kind:
        raise CheckpointError(
            f"layer {layer.name!r}: the compressed layer is {layer.kind!r} but the model has "
            f"{type(module).__name__} there"
        )
    if tuple(module.weight.shape) != layer.shape:
        raise CheckpointError(
            f"layer {layer.name!r}: expected weight shape {tuple(module.weight.shape)}, got {layer.shape}"
        )
    if layer.bias is not None and getattr(module, "bias", None) is None:
        raise CheckpointError(f"layer {layer.name!r}: the file has a bias, the model's {type(module).__name__} has none")


@torch.no_grad()
def _decode_into(layer: CompressedLayer, module: nn.Module) -> None:
    """Decode ``layer`` once into ``module`` (kinds without a sparse runtime, grouped convolutions)."""
    module.weight.copy_(torch.from_numpy(layer.dense_weight()))
    if layer.bias is not None:
        module.bias.copy_(torch.from_numpy(layer.bias))


def _layer_keys(cm: CompressedModel) -> set[str]:
    """State-dict keys the compressed layers and ties fill (the rest must come from ``extras``)."""
    keys = {f"{layer.name}.weight" for layer in cm.layers} | set(cm.tied)
    return keys | {f"{layer.name}.bias" for layer in cm.layers if layer.bias is not None}


def to_sparse_module(
    cm: CompressedModel,
    conv_mode: str | ConvMode = ConvMode.DENSE,
    backend: str | Backend = Backend.AUTO,
    *,
    format: str | Format = Format.AUTO,
    model: nn.Module | None = None,
    trust_code: bool = False,
    base_dir: Path | None = None,
) -> nn.Module:
    """``model`` (or the file's architecture) with every compressed layer replaced by its runtime layer.

    ``backend`` chooses the sparse layers' kernel (see :mod:`deepcompress.runtime.dispatch`);
    ``format`` the batch-1 layout of every Linear on the ``simd`` backend (``"auto"`` measures each
    layer; ``"int8"`` is the opt-in int8-activation kernel, see :mod:`deepcompress.runtime.plan`). A weight
    tied to a compressed layer is decoded into its module (the sparse replacement holds no Parameter
    to share).

    Returns the model in eval mode with gradients off. Raises :class:`CheckpointError` when a layer
    name, kind or shape does not match the architecture, or when ``extras`` miss or add tensors.
    """
    if not isinstance(cm, CompressedModel):
        raise TypeError(f"expected a CompressedModel, got {type(cm).__name__}")
    options = {"conv_mode": ConvMode.parse(conv_mode, "conv_mode"), "backend": Backend.parse(backend, "backend"),
               "format": Format.parse(format, "format")}
    if model is None:
        model = build_architecture(cm, trust_code=trust_code, base_dir=base_dir)
    modules = dict(model.named_modules())
    for layer in cm.layers:
        if layer.name not in modules:
            raise CheckpointError(
                f"compressed layer {layer.name!r} is not a submodule of {type(model).__name__}; its weight layers "
                f"are {[n for n, m in modules.items() if handler_for(m) is not None]}"
            )
        _check_layer(layer, modules[layer.name])
    state = model.state_dict()
    expected = set(state) - _layer_keys(cm)
    given = set(cm.extras)
    if expected != given:
        raise CheckpointError(
            f"model {type(model).__name__}: extras are missing {sorted(expected - given)} "
            f"and have unexpected {sorted(given - expected)}"
        )
    with torch.no_grad():
        for key, value in cm.extras.items():
            tensor = torch.from_numpy(np.asarray(value))
            if tuple(tensor.shape) != tuple(state[key].shape):
                raise CheckpointError(f"extra {key!r}: expected shape {tuple(state[key].shape)}, got {tuple(tensor.shape)}")
            state[key].copy_(tensor)
    tied_owners = {source.rpartition(".")[0] for source in cm.tied.values()}
    for layer in cm.layers:
        module = modules[layer.name]
        handler = handler_for(module)
        new = None if layer.name in tied_owners or handler.sparse is None else handler.sparse(layer, module, options)
        if new is None:
            _decode_into(layer, module)
        else:
            _replace(model, layer.name, new)
    with torch.no_grad():
        for key, source in cm.tied.items():
            tied, owner = model.get_parameter(key), model.get_parameter(source)
            if tied is not owner:
                tied.copy_(owner)
    model.eval()
    model.requires_grad_(False)
    return model
