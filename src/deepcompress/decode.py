"""Turning a compressed file back into a runnable network.

``runtime="dense"`` decodes every layer to a dense weight (``codebook[codes]`` at the stored
positions), bit-identical to the quantized model that was encoded. ``runtime="sparse"`` keeps the
compressed representation and computes from it directly (see :mod:`deepcompress.runtime`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from deepcompress.compressed import CompressedModel
from deepcompress.errors import CheckpointError, ConfigError
from deepcompress.format import load_compressed
from deepcompress.models import build_model

RUNTIMES = ("dense", "sparse")


def empty_model(name: str, device: str | torch.device = "cpu") -> nn.Module:
    """The registered architecture with uninitialised storage (no default-init cost), in eval mode."""
    with torch.device("meta"):
        model = build_model(name)
    return model.to_empty(device=device).eval()


@torch.no_grad()
def to_dense_module(cm: CompressedModel, device: str | torch.device = "cpu") -> nn.Module:
    """The registered architecture with ``cm``'s decoded weights, in eval mode.

    Weights are written straight into uninitialised storage (no default initialisation, no dense
    state-dict copies: VGG-16 decodes without a second 553 MB copy), bit-identical to
    ``codebook[codes]`` at the stored positions. Every state-dict tensor is written exactly once, or
    ``CheckpointError`` names the ones the compressed model lacks or adds.
    """
    model = empty_model(cm.model_name, device)
    state = model.state_dict(keep_vars=True)
    written: set[str] = set()

    def target(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        if name not in state or tuple(state[name].shape) != tuple(shape):
            got = tuple(state[name].shape) if name in state else "nothing"
            raise CheckpointError(f"{cm.model_name}: expected a tensor {name!r} of shape {got}, the file has {tuple(shape)}")
        written.add(name)
        return state[name]

    for layer in cm.layers:
        weight = target(f"{layer.name}.weight", layer.shape)
        if weight.device.type == "cpu":  # calloc'd pages are zero already: no 553 MB memset for VGG-16
            weight.data = torch.from_numpy(np.zeros(layer.shape, dtype=np.float32))
        else:
            weight.zero_()
        flat = weight.data.view(-1)
        codebook = torch.from_numpy(layer.codebook).to(device)
        codes = torch.from_numpy(layer.codes).to(device)
        flat[torch.from_numpy(layer.positions).to(device)] = codebook[codes]
        if layer.bias is not None:
            target(f"{layer.name}.bias", layer.bias.shape).copy_(torch.from_numpy(layer.bias))
    for name, array in cm.extras.items():
        target(name, array.shape).copy_(torch.from_numpy(np.asarray(array)))
    missing = sorted(set(state) - written)
    if missing:
        raise CheckpointError(f"{cm.model_name}: the compressed model has no values for {missing}")
    return model


def load_with_metadata(path: str | os.PathLike[str], runtime: str = "dense") -> tuple[nn.Module, dict[str, Any]]:
    """Read ``path`` and build a module for ``runtime``; returns ``(module, file metadata)``."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; expected one of {list(RUNTIMES)}")
    compressed = load_compressed(path)
    if runtime == "sparse":
        from deepcompress.runtime import to_sparse_module

        return to_sparse_module(compressed), compressed.metadata
    return to_dense_module(compressed), compressed.metadata


def load(path: str | os.PathLike[str], runtime: str = "dense") -> nn.Module:
    """Load a compressed file as a ready-to-run module (``runtime`` ``"dense"`` or ``"sparse"``)."""
    return load_with_metadata(path, runtime)[0]
