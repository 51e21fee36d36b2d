"""Turning a compressed file back into a runnable network, or into a plain state dict.

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

from deepcompress.compressed import CompressedModel
from deepcompress.errors import CheckpointError, ConfigError
from deepcompress.format import load_compressed
from deepcompress.models import MODELS, build_model

RUNTIMES = ("dense", "sparse")


def build_architecture(cm: CompressedModel, *, trust_code: bool = False, base_dir: Path | None = None,
                       device: str | torch.device = "cpu") -> nn.Module:
    """A fresh module of ``cm``'s architecture, from its record or its built-in name, in eval mode.

    A built-in one is built on the meta device and given uninitialised storage (no default-init cost:
    every tensor is overwritten by the decoder). ``ConfigError`` says how to pass a module when the
    file records no way to build one, or when building it would run code the caller has not trusted.
    """
    if cm.arch is not None and cm.arch.get("source") != "builtin":
        from deepcompress.sources import ArchRecord

        return ArchRecord.from_dict(cm.arch).build(trust_code=trust_code, base_dir=base_dir).to(device).eval()
    if cm.model_name not in MODELS:
        raise ConfigError(
            f"the file records no architecture for {cm.model_name!r}; build the module yourself and pass it: "
            "deepcompress.load(path, model=my_module)"
        )
    return empty_model(cm.model_name, device, **(cm.arch or {}).get("kwargs", {}))


def empty_model(name: str, device: str | torch.device = "cpu", **kwargs: Any) -> nn.Module:
    """The built-in or registered architecture with uninitialised storage (no default-init cost), in eval mode."""
    with torch.device("meta"):
        model = build_model(name, **kwargs)
    # the same as model.to_empty(device=device), which imports sympy on first use (36 MiB resident and
    # ~0.4 s per process, measured in the VGG-16 scale run)
    return model._apply(lambda t: torch.empty(t.shape, dtype=t.dtype, device=device)).eval()


@torch.no_grad()
def to_dense_module(cm: CompressedModel, model: nn.Module | None = None, device: str | torch.device = "cpu", *,
                    trust_code: bool = False, base_dir: Path | None = None) -> nn.Module:
    """``model`` (or the file's architecture, see :func:`build_architecture`) with ``cm``'s decoded
    weights, in eval mode.

    Weights are written straight into the module's storage (no dense state-dict copies: VGG-16 decodes
    without a second 553 MB copy), bit-identical to ``codebook[codes]`` at the stored positions. Every
    state-dict tensor is written exactly once, or ``CheckpointError`` names the first tensor the file
    lacks, adds, or holds in another shape.
    """
    if model is None:
        model = build_architecture(cm, trust_code=trust_code, base_dir=base_dir, device=device)
    else:
        model.to(device).eval()
    state = model.state_dict(keep_vars=True)
    written: set[str] = set()
    where = type(model).__name__

    def target(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        if name not in state or tuple(state[name].shape) != tuple(shape):
            got = tuple(state[name].shape) if name in state else "nothing"
            raise CheckpointError(f"{where}: expected a tensor {name!r} of shape {got}, the file has {tuple(shape)}")
        written.add(name)
        return state[name]

    for layer in cm.layers:
        weight = target(f"{layer.name}.weight", layer.shape)
        if weight.device.type == "cpu" and weight.dtype == torch.float32:  # calloc'd pages are zero already
            weight.data = torch.from_numpy(np.zeros(layer.shape, dtype=np.float32))
        else:
            weight.zero_()
        flat = weight.data.view(-1)
        codebook = torch.from_numpy(layer.codebook).to(flat.device, flat.dtype)
        codes = torch.from_numpy(layer.codes).to(flat.device)
        flat[torch.from_numpy(layer.positions).to(flat.device)] = codebook.index_select(0, codes.to(torch.int32))
        if layer.bias is not None:
            target(f"{layer.name}.bias", layer.bias.shape).copy_(torch.from_numpy(layer.bias))
    for name, array in cm.extras.items():
        target(name, array.shape).copy_(torch.from_numpy(np.asarray(array)))
    for name, source in cm.tied.items():
        tensor = target(name, tuple(state[source].shape))
        if tensor is not state[source]:  # the caller's module does not tie them: copy the values
            tensor.copy_(state[source])
    missing = sorted(set(state) - written)
    if missing:
        raise CheckpointError(f"{where}: the compressed file has no values for {missing}")
    return model


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
        from deepcompress.runtime import to_sparse_module

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
    compute from the compressed form; ``backend`` and ``conv_mode`` options, see
    :func:`deepcompress.runtime.to_sparse_module`). ``max_elements`` raises the decode budget for a
    file that declares more than the default (docs/SECURITY.md).
    """
    return load_with_metadata(path, model, runtime=runtime, trust_code=trust_code, max_elements=max_elements,
                              **runtime_options)[0]
