"""Checkpoints as safetensors with JSON metadata (model name, dataset, accuracy, seed, command).

No pickle anywhere: weights are loaded with safetensors, metadata is JSON stored in the safetensors
header under the key ``"deepcompress"``. Writes are atomic.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from deepcompress.atomic import atomic_write_bytes
from deepcompress.errors import CheckpointError
from deepcompress.models import build_model

METADATA_KEY = "deepcompress"


def save_checkpoint(model: nn.Module, path: str | os.PathLike[str], metadata: dict[str, Any]) -> None:
    """Write ``model``'s state dict and ``metadata`` (must include ``"model"``) to ``path`` atomically."""
    if "model" not in metadata:
        raise ValueError("checkpoint metadata needs a 'model' entry naming the architecture")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = save_safetensors_bytes(tensors, metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    atomic_write_bytes(path, data)


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a checkpoint; ``CheckpointError`` if it is not a deepcompress checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    data = path.read_bytes()
    try:
        tensors = load_safetensors_bytes(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        metadata = json.loads(header.get("__metadata__", {}).get(METADATA_KEY, "null"))
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not a safetensors checkpoint: {exc}") from exc
    if not isinstance(metadata, dict) or "model" not in metadata:
        raise CheckpointError(f"{path} has no deepcompress metadata (expected a 'model' entry)")
    return tensors, metadata


def load_state_strict(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load ``tensors`` into ``model``, naming the first missing, unexpected or mis-shaped tensor."""
    expected = model.state_dict()
    for name, value in expected.items():
        if name not in tensors:
            raise CheckpointError(f"{source}: missing tensor {name!r} expected by {type(model).__name__}")
        if tuple(tensors[name].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{source}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                f"{type(model).__name__} expects {tuple(value.shape)}"
            )
    for name in tensors:
        if name not in expected:
            raise CheckpointError(f"{source}: unexpected tensor {name!r} for {type(model).__name__}")
    model.load_state_dict(tensors)


def load_checkpoint(path: str | os.PathLike[str], expect_model: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build the checkpoint's model and load its weights; returns ``(model, metadata)``."""
    tensors, metadata = read_checkpoint(path)
    if expect_model is not None and metadata["model"] != expect_model:
        raise CheckpointError(f"{path} holds a {metadata['model']!r} model, expected {expect_model!r}")
    model = build_model(metadata["model"])
    load_state_strict(model, tensors, str(path))
    return model, metadata
