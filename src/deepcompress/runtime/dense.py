"""Decoding a compressed model into a dense module (the counterpart of :mod:`deepcompress.runtime.sparse`).

Every layer's weight is ``codebook[codes]`` at the stored positions and zero elsewhere, written into
the caller's module or into one the file's architecture record rebuilds (a built-in or registered
name, a torchvision builder, a Hugging Face config; an import reference runs only with
``trust_code=True``), bit-identical to the quantized model that was encoded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deepcompress.compressed import CompressedModel
from deepcompress.errors import CheckpointError, ConfigError
from deepcompress.models import MODELS, build_model


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
