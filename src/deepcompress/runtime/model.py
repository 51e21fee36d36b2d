"""Load a :class:`CompressedModel` for inference with the sparse codebook layers.

The architecture comes from :func:`deepcompress.models.build_model`; every compressed Linear (and,
by choice, Conv2d) submodule is swapped, by qualified name, for its runtime layer, and the other
tensors (``extras``: uncompressed layers, normalisation statistics) are loaded strictly.
"""

from __future__ import annotations


import torch
from torch import nn

from deepcompress.compressed import CompressedLayer, CompressedModel
from deepcompress.choices import Choice
from deepcompress.errors import CheckpointError, ConfigError
from deepcompress.layers import layer_kind
from deepcompress.models import build_model
from deepcompress.runtime.dispatch import Backend
from deepcompress.runtime.layers import SparseCodebookConv2d, SparseCodebookLinear


class ConvMode(Choice):
    """How compressed convolutions run: ``dense`` decodes the kernel once at load and calls
    ``F.conv2d``; ``sparse`` runs im2col times the packed kernel (groups == 1 only; grouped ones are
    decoded). Dense is the default on measurement: for LeNet-5 (2 threads, interleaved medians) conv1
    took 95 us dense vs 101 us sparse and conv2 166 vs 141 us at batch 1, but 1.1 vs 5.4 ms and
    3.7 vs 11.4 ms at batch 64, where im2col's copy and the dense GEMM's efficiency dominate."""

    DENSE = "dense"
    SPARSE = "sparse"



def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _runtime_layer(layer: CompressedLayer, module: nn.Module, conv_mode: ConvMode, backend: Backend) -> nn.Module:
    kind = layer_kind(module)
    if kind != layer.kind:
        raise CheckpointError(
            f"layer {layer.name!r}: the compressed layer is {layer.kind!r} but the model has "
            f"{type(module).__name__} there"
        )
    if tuple(module.weight.shape) != layer.shape:
        raise CheckpointError(
            f"layer {layer.name!r}: expected weight shape {tuple(module.weight.shape)}, got {layer.shape}"
        )
    if (layer.bias is None) != (module.bias is None):
        raise CheckpointError(f"layer {layer.name!r}: the model and the compressed layer disagree on a bias")
    if kind == "linear":
        return SparseCodebookLinear.from_compressed(layer, backend=backend)
    assert isinstance(module, nn.Conv2d)
    if conv_mode is ConvMode.SPARSE and module.groups == 1 and module.padding_mode == "zeros":
        if isinstance(module.padding, str):
            raise ConfigError(f"layer {layer.name!r}: string padding {module.padding!r} is not supported")
        return SparseCodebookConv2d.from_compressed(
            layer, stride=module.stride, padding=module.padding, dilation=module.dilation, backend=backend
        )
    with torch.no_grad():  # decoded once at load; the conv keeps its own hyper-parameters
        module.weight.copy_(torch.from_numpy(layer.dense_weight()))
        if layer.bias is not None:
            module.bias.copy_(torch.from_numpy(layer.bias))
    return module


def to_sparse_module(
    cm: CompressedModel, conv_mode: str | ConvMode = ConvMode.DENSE, backend: str | Backend = Backend.AUTO
) -> nn.Module:
    """Build ``cm.model_name`` with every compressed layer replaced by its runtime layer.

    ``backend`` chooses the sparse layers' kernel (see :mod:`deepcompress.runtime.dispatch`).

    Returns the model in eval mode with gradients off. Raises :class:`CheckpointError` when a layer
    name, kind or shape does not match the architecture, or when ``extras`` miss or add tensors.
    """
    if not isinstance(cm, CompressedModel):
        raise TypeError(f"expected a CompressedModel, got {type(cm).__name__}")
    mode = ConvMode.parse(conv_mode, "conv_mode")
    chosen = Backend.parse(backend, "backend")
    model = build_model(cm.model_name)
    modules = dict(model.named_modules())
    decoded: set[str] = set()
    for layer in cm.layers:
        if layer.name not in modules:
            raise CheckpointError(
                f"compressed layer {layer.name!r} is not a submodule of {cm.model_name!r}; "
                f"its layers are {[n for n, m in modules.items() if layer_kind(m)]}"
            )
        new = _runtime_layer(layer, modules[layer.name], mode, chosen)
        if new is modules[layer.name]:
            decoded.update({f"{layer.name}.weight", f"{layer.name}.bias"})
        else:
            _replace(model, layer.name, new)
    expected = set(model.state_dict()) - decoded
    given = set(cm.extras)
    if expected != given:
        raise CheckpointError(
            f"model {cm.model_name!r}: extras are missing {sorted(expected - given)} "
            f"and have unexpected {sorted(given - expected)}"
        )
    with torch.no_grad():
        state = model.state_dict()
        for key, value in cm.extras.items():
            tensor = torch.from_numpy(value)
            if tuple(tensor.shape) != tuple(state[key].shape):
                raise CheckpointError(
                    f"extra {key!r}: expected shape {tuple(state[key].shape)}, got {tuple(tensor.shape)}"
                )
            state[key].copy_(tensor)
    model.eval()
    model.requires_grad_(False)
    return model
