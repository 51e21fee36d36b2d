"""Turning a compressed file back into a runnable network.

``runtime="dense"`` decodes every layer to a dense weight (``codebook[codes]`` at the stored
positions), bit-identical to the quantized model that was encoded. ``runtime="sparse"`` keeps the
compressed representation and computes from it directly (see :mod:`deepcompress.runtime`).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from deepcompress.checkpoint import load_state_strict
from deepcompress.compressed import CompressedModel
from deepcompress.errors import ConfigError
from deepcompress.format import load_compressed
from deepcompress.models import build_model

RUNTIMES = ("dense", "sparse")


def to_dense_module(compressed: CompressedModel) -> nn.Module:
    """The registered architecture with the decoded dense weights loaded, in eval mode."""
    model = build_model(compressed.model_name)
    state = {name: torch.from_numpy(array.copy()) for name, array in compressed.state_dict().items()}
    load_state_strict(model, state, f"compressed {compressed.model_name!r} model")
    return model.eval()


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
