"""A weight-shared model as plain data: the :class:`CompressedModel` the encoders and the file consume.

Each weight-shared layer becomes a :class:`CompressedLayer` (codebook, surviving positions, codes,
bias, its handler's kind and attrs); every other state-dict tensor -- BatchNorm and LayerNorm
parameters and statistics, biases of layers left uncompressed, other parameters and buffers -- is
carried exactly in ``extras``, so the decoded state dict is complete. A module whose weight is tied to
a compressed layer is recorded in ``tied`` and stored once. :func:`stored_as_is` says, for each extra,
why it was not compressed, so nothing is left out silently.
"""

from __future__ import annotations

from typing import AbstractSet, Any, Iterator, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from deepcompress.compressed import CompressedLayer, CompressedModel
from deepcompress.errors import ConfigError
from deepcompress.handlers import handler_for
from deepcompress.prune.apply import MASK
from deepcompress.quantize.apply import quantized_layers
from deepcompress.quantize.config import check_bits
from deepcompress.quantize.shared import codebook_of
from deepcompress.selection import per_layer, tied_layers


def share_biases_(model: nn.Module, bits: int) -> nn.Module:
    """Weight-share every quantized layer's bias in place: at most ``2**bits`` float16 values per layer.

    The paper leaves biases out of its tables and stores them whole; in a file of a few kilobytes they
    are a tenth of the bytes (LeNet-300-100's 410 float16 biases are 820 B). As for the weights (section
    3), a 1-D k-means with linear initialisation chooses the values, rounded to float16 so the file
    stores each once (``bias_dtype = "codebook"``) and every bias as a ``bits``-bit index. Run after
    fine-tuning, so the accuracy measured afterwards is the file's.
    """
    from deepcompress.quantize.kmeans import KMeans1D

    check_bits(bits, "encode.bias_bits")
    for _, module, _ in quantized_layers(model):
        bias = getattr(module, "bias", None)
        if not isinstance(bias, torch.Tensor) or bias.numel() == 0:
            continue
        values = bias.detach().cpu().float().numpy()
        km = KMeans1D(min(2**bits, np.unique(values).size), init="linear").fit(values)
        shared = km.centroids_.astype(np.float16).astype(np.float32)[km.labels_]
        with torch.no_grad():
            bias.copy_(torch.from_numpy(shared).to(bias))
    return model


def export_compressed(
    model: nn.Module,
    model_name: str,
    index_bits: int | Mapping[str, int] = 5,
    metadata: Mapping[str, Any] | None = None,
    arch: Mapping[str, Any] | None = None,
) -> CompressedModel:
    """The quantized model as plain data: one :class:`CompressedLayer` per weight-shared layer.

    Each layer carries the float32 codebook exactly as used in forward, the surviving positions (flat,
    row-major) and their codes, and its bias; every other state-dict tensor goes to ``extras`` under
    its ordinary name and dtype (parametrization internals and ``weight_mask`` buffers are left out),
    so loading ``CompressedModel.state_dict()`` into the same architecture reproduces the quantized
    model's output exactly. ``index_bits`` is the relative-index width (paper section 2: 5 for LeNet
    and VGG, 4 for AlexNet), one int or a pattern mapping. ``arch`` is an optional architecture record
    (:class:`deepcompress.sources.ArchRecord` as a dict).
    """
    tied = tied_layers(model)
    shared_layers = [(n, m, s) for n, m, s in quantized_layers(model) if n not in tied]
    if not shared_layers:
        raise ConfigError("model has no weight-shared layer; run quantize_ before export_compressed")
    layers = [_layer(name, module, shared, index_bits) for name, module, shared in shared_layers]
    exported = {layer.name for layer in layers}
    covered = {f"{l.name}.weight" for l in layers} | {f"{l.name}.bias" for l in layers if l.bias is not None}
    tied_keys = {f"{n}.weight": f"{owner}.weight" for n, owner in tied.items() if owner in exported}
    extras = {key: _as_numpy(t) for key, t in _plain_state(model, skip=covered | set(tied_keys))}
    return CompressedModel(
        model_name=model_name,
        layers=layers,
        extras=extras,
        metadata=dict(metadata or {}),
        tied=tied_keys,
        arch=dict(arch) if arch is not None else None,
    )


def _layer(name: str, module: nn.Module, shared: Any, index_bits: int | Mapping[str, int]) -> CompressedLayer:
    handler = handler_for(module)
    if handler is None:
        raise ConfigError(f"layer {name!r}: no layer handler takes {type(module).__name__}; register one")
    bias = getattr(module, "bias", None)
    if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != tuple(shared.shape[:1]):
        bias = None  # no bias, or one not indexed by the weight's rows (GPT-2's Conv1D): an extra
    return CompressedLayer(
        name=name,
        kind=handler.kind,
        shape=tuple(shared.shape),
        codebook=codebook_of(module).detach().cpu().float().numpy(),
        positions=shared.positions.cpu().numpy(),
        codes=shared.codes.cpu().numpy(),
        bias=bias.detach().cpu().float().numpy() if bias is not None else None,
        weight_bits=shared.bits,
        index_bits=check_bits(per_layer(index_bits, name, "index_bits"), f"index_bits of layer {name!r}"),
        attrs=handler.attrs(module),
    )


def _plain_state(model: nn.Module, skip: AbstractSet[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """``(state-dict key, tensor)`` as an unparametrized model would have them: a parametrized tensor
    under its own name (its computed value), no parametrization internals, no pruning masks.

    Keys in ``skip`` are left out before their tensor is read, so a compressed layer's weight is
    never computed (a dense copy of the layer: 411 MB for VGG-16's fc6).
    """
    for module_name, module in model.named_modules():
        if ".parametrizations" in f".{module_name}" or module_name.startswith("parametrizations"):
            continue
        prefix = f"{module_name}." if module_name else ""
        names = [*module._parameters, *(b for b in module._buffers if b not in module._non_persistent_buffers_set)]
        if parametrize.is_parametrized(module):
            names = [*names, *module.parametrizations]
        for tensor_name in names:
            if tensor_name == MASK or prefix + tensor_name in skip:
                continue
            tensor = getattr(module, tensor_name)
            if isinstance(tensor, torch.Tensor):
                yield prefix + tensor_name, tensor


def _as_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A CPU numpy copy; bfloat16 (which numpy lacks) widens to float32, exactly."""
    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy().copy()


def stored_as_is(model: nn.Module, cm: CompressedModel) -> list[dict[str, Any]]:
    """Every tensor of ``cm.extras`` with its shape, dtype, bytes and why it was not compressed:
    not a weight layer (BatchNorm, LayerNorm, ...), a weight layer not selected (``types``,
    ``patterns``, ``ignore``, ``filter_fn``) or its bias, or a weight-like tensor with no handler."""
    modules = dict(model.named_modules())
    rows = []
    for key, array in cm.extras.items():
        module_name, _, tensor_name = key.rpartition(".")
        module = modules.get(module_name)
        cls = type(module).__name__ if module is not None else "?"
        if module is not None and handler_for(module) is not None:
            reason = f"{cls} not selected for compression (types / patterns / ignore / filter_fn)"
            if tensor_name != "weight":
                reason = f"{tensor_name} of a {reason}"
        elif tensor_name == "weight" and array.ndim >= 2:
            reason = f"no layer handler for {cls} (deepcompress.register_handler adds one)"
        else:
            reason = f"not a weight layer ({cls}.{tensor_name})"
        rows.append({"tensor": key, "shape": list(array.shape), "dtype": str(array.dtype), "bytes": int(array.nbytes), "reason": reason})
    return rows
