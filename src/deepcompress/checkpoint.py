"""Checkpoints: deepcompress's own (safetensors + JSON metadata), and whatever state dict a user has.

deepcompress writes safetensors with its metadata (model name, dataset, accuracy, seed, command) as JSON
under the header key ``"deepcompress"``, atomically. It reads those, any other safetensors file, and
``torch.save`` files (``.pt``/``.pth``/``.bin``) through ``torch.load(weights_only=True)`` only, which
rebuilds tensors and plain containers and never runs pickled code.
"""

from __future__ import annotations

import difflib
import json
import os
import pickle
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file as load_safetensors_file
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from deepcompress.atomic import atomic_write_bytes
from deepcompress.errors import CheckpointError
from deepcompress.models import build_model

METADATA_KEY = "deepcompress"
#: Keys under which training scripts commonly wrap a state dict (Lightning, many research repos).
WRAPPER_KEYS = ("state_dict", "model")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
_PICKLE_MAGIC = b"\x80"  # torch.save's legacy format starts with a pickle protocol opcode


def storable(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors that safetensors can write: a tensor sharing memory with an earlier one
    (a tied weight) is copied, since safetensors refuses shared storage and loading needs every key."""
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        tensor = value.detach().cpu().contiguous()
        pointer = tensor.untyped_storage().data_ptr() if tensor.numel() else -1
        out[key] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    return out


def save_checkpoint(model: nn.Module, path: str | os.PathLike[str], metadata: dict[str, Any]) -> None:
    """Write ``model``'s state dict and ``metadata`` (must include ``"model"``) to ``path`` atomically."""
    if "model" not in metadata:
        raise ValueError("checkpoint metadata needs a 'model' entry naming the architecture")
    tensors = storable(model.state_dict())
    data = save_safetensors_bytes(tensors, metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    atomic_write_bytes(path, data)


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a checkpoint; ``CheckpointError`` if it is not a deepcompress checkpoint."""
    path = _existing(path)
    tensors, metadata = _read_safetensors(path)
    if metadata is None or "model" not in metadata:
        raise CheckpointError(f"{path} has no deepcompress metadata (expected a 'model' entry)")
    return tensors, metadata


def read_state_dict(
    path: str | os.PathLike[str],
    *,
    strip_prefix: str | None = None,
    rename: Mapping[str, str] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors of any checkpoint a user has, and deepcompress metadata (``{}`` for other files).

    Reads safetensors files and ``torch.save`` files (the format is recognised from the bytes, not the
    suffix). A ``torch.save`` file must hold a dict of tensors, or a dict wrapping one under one of
    :data:`WRAPPER_KEYS`; a pickled module is refused. Names are then adjusted: ``strip_prefix``
    (e.g. ``"module."``, added by DataParallel) is removed from every name that starts with it, and each
    ``rename`` entry ``{"old.prefix.": "new.prefix."}`` replaces that prefix (the longest matching entry
    wins). A prefix that matches no name is an error, as it is almost surely a typo.
    """
    path = _existing(path)
    with path.open("rb") as f:
        head = f.read(9)
    if _looks_like_safetensors(head, path.stat().st_size):
        tensors, metadata = _read_safetensors(path)
    elif head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC):
        tensors, metadata = _read_torch(path), None
    else:
        raise CheckpointError(f"{path} is neither a safetensors file nor a torch.save file; it starts with {head!r}")
    return _renamed(tensors, str(path), strip_prefix, rename or {}), metadata or {}


def load_state_into(model: nn.Module, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``tensors`` into ``model`` strictly: every tensor name, shape and dtype must match.

    The error names the first missing, mis-shaped or unexpected tensor (``source`` says where the
    tensors came from), the closest name on the other side, and ``strip_prefix`` when every checkpoint
    name carries a prefix the model lacks. Floating tensors are cast to the model's floating dtype;
    any other dtype difference is an error.
    """
    expected = model.state_dict()
    owner = type(model).__name__
    for name, target in expected.items():
        if name not in tensors:
            raise CheckpointError(
                f"{source}: missing tensor {name!r} expected by {owner}"
                + _closest("closest in the checkpoint", name, tensors)
                + _prefix_hint(tensors, expected)
            )
        got = tensors[name]
        if tuple(got.shape) != tuple(target.shape):
            same_shape = [k for k, v in tensors.items() if k != name and tuple(v.shape) == tuple(target.shape)]
            raise CheckpointError(
                f"{source}: tensor {name!r} has shape {tuple(got.shape)}, {owner} expects {tuple(target.shape)}"
                + _closest("checkpoint tensor with that shape", name, same_shape)
            )
    for name in tensors:
        if name not in expected:
            raise CheckpointError(
                f"{source}: unexpected tensor {name!r} for {owner}" + _closest(f"closest {owner} tensor", name, expected)
            )
    model.load_state_dict({name: _cast(tensors[name], target, name, owner, source) for name, target in expected.items()}, strict=True)



def load_checkpoint(
    path: str | os.PathLike[str], expect_model: str | None = None, *, trust_code: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the checkpoint's model (its ``arch`` record, else its built-in ``model`` name) and load its
    weights; returns ``(model, metadata)``. A record naming user code runs only with ``trust_code``."""
    tensors, metadata = read_checkpoint(path)
    if expect_model is not None and metadata["model"] != expect_model:
        raise CheckpointError(f"{path} holds a {metadata['model']!r} model, expected {expect_model!r}")
    if "arch" in metadata:
        from deepcompress.sources import ArchRecord

        model = ArchRecord.from_dict(metadata["arch"]).build(trust_code=trust_code, base_dir=Path(path).resolve().parent)
    else:
        model = build_model(metadata["model"])
    load_state_into(model, tensors, str(path))
    return model, metadata


def _existing(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    """A safetensors file: an 8-byte little-endian header length that fits the file, then ``{``."""
    return len(head) == 9 and 2 <= int.from_bytes(head[:8], "little") <= size - 8 and head[8:9] == b"{"


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Tensors and the deepcompress metadata (None when the file has none) of a safetensors file."""
    try:
        with safe_open(path, "pt") as f:
            header = f.metadata() or {}
        tensors = load_safetensors_file(path)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is not a safetensors checkpoint: {exc}") from exc
    if METADATA_KEY not in header:
        return tensors, None
    try:
        metadata = json.loads(header[METADATA_KEY])
    except ValueError as exc:
        raise CheckpointError(f"{path}: the {METADATA_KEY!r} metadata is not JSON: {exc}") from exc
    return tensors, metadata if isinstance(metadata, dict) else None


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a ``torch.save`` file, loaded with ``weights_only=True`` (no pickled code runs)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found:
            raise CheckpointError(
                f"{path} holds a pickled object, not a state dict (it refers to {found.group(1)}); save "
                "`model.state_dict()` with torch.save (weights_only loading never runs pickled code)"
            ) from None
        reason = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
        raise CheckpointError(f"{path} is not a readable torch.save file: {reason.group(1) if reason else exc}") from None
    except (RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable torch.save file: {first}") from None
    return _tensor_dict(obj, str(path))


def _tensor_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """``obj`` as a dict of tensors, unwrapping it from one of :data:`WRAPPER_KEYS` if needed."""
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is not None:
            obj, source = obj[key], f"{source} [{key!r}]"
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{source}: expected a non-empty dict of tensors (a state dict), got {_describe(obj)}")
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{source}: entry {name!r} is a {type(value).__name__}, expected a tensor "
                f"(a wrapped state dict must sit under one of {list(WRAPPER_KEYS)})"
            )
    return dict(obj)


def _describe(obj: Any) -> str:
    return "an empty dict" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"


def _renamed(
    tensors: dict[str, torch.Tensor], source: str, strip_prefix: str | None, rename: Mapping[str, str]
) -> dict[str, torch.Tensor]:
    """``tensors`` with ``strip_prefix`` removed, then ``rename``'s prefixes replaced."""
    if strip_prefix:
        _check_prefix_used(tensors, "strip_prefix", strip_prefix, source)
        tensors = _relabel(tensors, {strip_prefix: ""}, source)
    for old in rename:
        _check_prefix_used(tensors, f"rename {old!r}", old, source)
    return _relabel(tensors, rename, source) if rename else tensors


def _check_prefix_used(tensors: Mapping[str, Any], what: str, prefix: str, source: str) -> None:
    if not any(name.startswith(prefix) for name in tensors):
        raise CheckpointError(f"{source}: {what} matches no tensor name; the names start like {_sample(tensors)}")


def _relabel(tensors: dict[str, torch.Tensor], prefixes: Mapping[str, str], source: str) -> dict[str, torch.Tensor]:
    """Replace each name's longest matching prefix from ``prefixes``; two tensors may not end up with one name."""
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for name, value in tensors.items():
        old = max((p for p in prefixes if name.startswith(p)), key=len, default=None)
        new = name if old is None else prefixes[old] + name[len(old):]
        if new in out:
            raise CheckpointError(f"{source}: tensors {origin[new]!r} and {name!r} would both be named {new!r} after renaming")
        out[new], origin[new] = value, name
    return out


def _sample(names: Iterable[str], count: int = 3) -> str:
    first = sorted(names)[:count]
    return ", ".join(repr(n) for n in first)


def _closest(label: str, name: str, candidates: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(candidates), n=1)
    return f"; {label}: {match[0]!r}" if match else ""


def _dotted_prefixes(names: Iterable[str]) -> list[str]:
    """The dotted prefixes every name shares, shortest first (``["model.", "model.encoder."]``)."""
    split = [name.split(".")[:-1] for name in names]
    common: list[str] = []
    for parts in zip(*split):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return [".".join(common[: i + 1]) + "." for i in range(len(common))]


def _prefix_hint(tensors: Mapping[str, Any], expected: Mapping[str, Any]) -> str:
    """Suggest ``strip_prefix`` when every checkpoint name shares a prefix whose removal matches the model."""
    best, best_hits = None, 0
    for prefix in _dotted_prefixes(tensors):
        if all(name.startswith(prefix) for name in expected):
            continue
        hits = sum(name[len(prefix):] in expected for name in tensors)
        if hits > best_hits:
            best, best_hits = prefix, hits
    if best is None:
        return ""
    return f'; every checkpoint name starts with {best!r}: set strip_prefix = "{best}"'


def _cast(value: torch.Tensor, target: torch.Tensor, name: str, owner: str, source: str) -> torch.Tensor:
    if value.dtype == target.dtype:
        return value
    if value.is_floating_point() and target.is_floating_point():
        return value.to(target.dtype)
    raise CheckpointError(f"{source}: tensor {name!r} has dtype {value.dtype}, {owner} expects {target.dtype}")
