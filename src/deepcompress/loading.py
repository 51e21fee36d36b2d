"""Loading a compressed file: a runnable network, or a plain state dict.

The architecture is not the file's business (as in safetensors' ``load_model(model, filename)``):
``load(path, model=my_module)`` fills a module the caller built. Without one, the file's architecture
record rebuilds it -- a built-in or registered name, a torchvision builder, a Hugging Face config --
and an import reference (a user's factory) runs only with ``trust_code=True``.

``runtime="dense"`` decodes every layer to a dense weight (``codebook[codes]`` at the stored
positions), bit-identical to the quantized model that was encoded. ``runtime="sparse"`` keeps the
compressed representation and computes from it directly (see :mod:`deepcompress.runtime`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deepcompress.errors import ConfigError
from deepcompress.format import load_compressed
from deepcompress.runtime.dense import to_dense_module
from deepcompress.runtime.sparse import to_sparse_module

RUNTIMES = ("dense", "sparse")


def load_state_dict(path: str | os.PathLike[str], *, max_elements: int | None = None) -> dict[str, torch.Tensor]:
    """The file's decoded tensors as a plain dense state dict, for ``model.load_state_dict(...)``.

    Weights are ``codebook[codes]`` at the stored positions (float32); every other tensor has the
    dtype it was stored with; a tied weight appears under each of its names. ``max_elements`` raises
    the decode budget for a file that declares more (docs/SECURITY.md).
    """
    state = load_compressed(path, max_elements=max_elements).state_dict()
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}


def load_with_metadata(path: str | os.PathLike[str], model: nn.Module | None = None, *, runtime: str = "dense",
                       trust_code: bool = False, max_elements: int | None = None,
                       **runtime_options: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Read ``path`` and build a module for ``runtime``; returns ``(module, file metadata)``."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; expected one of {list(RUNTIMES)}")
    compressed = load_compressed(path, max_elements=max_elements)
    base_dir = Path(path).resolve().parent
    if runtime == "sparse":
        module = to_sparse_module(compressed, model=model, trust_code=trust_code, base_dir=base_dir, **runtime_options)
        return module, compressed.metadata
    if runtime_options:
        raise ConfigError(f"options {sorted(runtime_options)} apply to runtime='sparse' only")
    return to_dense_module(compressed, model, trust_code=trust_code, base_dir=base_dir), compressed.metadata


def load(path: str | os.PathLike[str], model: nn.Module | None = None, *, runtime: str = "dense",
         trust_code: bool = False, max_elements: int | None = None, **runtime_options: Any) -> nn.Module:
    """Load a compressed file as a ready-to-run module, in eval mode.

    ``model``: a module of the file's architecture to fill (its weights are overwritten); without it
    the file's architecture record builds one (user code only with ``trust_code=True``).
    ``runtime``: ``"dense"`` (decoded weights) or ``"sparse"`` (handled layers replaced by modules that
    compute from the compressed form; ``backend``, ``conv_mode`` and ``format`` options, see
    :func:`deepcompress.runtime.to_sparse_module`). ``max_elements`` raises the decode budget for a
    file that declares more than the default (docs/SECURITY.md).
    """
    return load_with_metadata(path, model, runtime=runtime, trust_code=trust_code, max_elements=max_elements,
                              **runtime_options)[0]
