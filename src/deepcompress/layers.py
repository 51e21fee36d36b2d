"""Choosing which layers a stage acts on, and per-layer settings.

Pruning and quantization both act on "compressible" layers: ``nn.Linear`` and ``nn.Conv2d`` by
default, optionally narrowed by name patterns (``fnmatch`` syntax, e.g. ``"fc*"``,
``"features.*"``). Per-layer settings are given as one value or as a mapping from name patterns to
values, the first matching pattern winning (``{"conv*": 8, "*": 5}``).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Mapping, Sequence, TypeVar

from torch import nn

from deepcompress.errors import ConfigError

LAYER_TYPES: dict[str, type[nn.Module]] = {"linear": nn.Linear, "conv2d": nn.Conv2d}

T = TypeVar("T")


def layer_kind(module: nn.Module) -> str | None:
    """``"linear"`` or ``"conv2d"`` for a compressible module, else ``None``."""
    for kind, cls in LAYER_TYPES.items():
        if type(module) is cls:
            return kind
    return None


def select_layers(
    model: nn.Module,
    types: Sequence[str] = ("linear", "conv2d"),
    patterns: Sequence[str] | None = None,
) -> list[tuple[str, nn.Module]]:
    """Return ``(name, module)`` for the model's compressible layers, in definition order.

    Raises :class:`ConfigError` for an unknown type, for a pattern that matches no compressible layer,
    or when the model has no compressible layer at all.
    """
    for kind in types:
        if kind not in LAYER_TYPES:
            raise ConfigError(f"unknown layer type {kind!r}; expected one of {sorted(LAYER_TYPES)}")
    candidates = [(n, m) for n, m in model.named_modules() if layer_kind(m) in types]
    if not candidates:
        raise ConfigError(
            f"model {type(model).__name__} has no prunable layer of types {list(types)}; "
            "deepcompress compresses nn.Linear and nn.Conv2d weights"
        )
    if patterns is None:
        return candidates
    for pattern in patterns:
        if not any(fnmatchcase(n, pattern) for n, _ in candidates):
            raise ConfigError(
                f"layer pattern {pattern!r} matches no layer; layers are {[n for n, _ in candidates]}"
            )
    return [(n, m) for n, m in candidates if any(fnmatchcase(n, p) for p in patterns)]


def per_layer(value: T | Mapping[str, T], name: str, what: str) -> T:
    """Resolve a per-layer setting: ``value`` itself, or the first pattern in it that matches ``name``."""
    if not isinstance(value, Mapping):
        return value
    for pattern, v in value.items():
        if fnmatchcase(name, pattern):
            return v
    raise ConfigError(
        f"no {what} given for layer {name!r}: patterns {list(value)} match nothing; add a '*' entry"
    )
