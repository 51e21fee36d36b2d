"""Choosing which layers a stage acts on, and per-layer settings.

Pruning and quantization act on the model's weight layers: every module a layer handler takes
(:mod:`deepcompress.handlers`: Linear, Conv1d/2d/3d, Embedding, EmbeddingBag, Hugging Face's
Conv1D, and what users register), optionally narrowed by kind (``types``), by name patterns
(``fnmatch`` syntax: ``"fc*"``, ``"features.*"``), minus ``ignore`` patterns, and by a torchao-style
``filter_fn(module, name) -> bool`` from Python. A weight shared by several modules (tied weights,
such as an embedding and an output layer) is selected once, at its first module.

Per-layer settings are given as one value or as a mapping from name patterns to values, the first
matching pattern winning (``{"conv*": 8, "*": 5}``).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Callable, Mapping, Sequence, TypeVar

from torch import nn
from torch.nn.utils import parametrize

from deepcompress.errors import ConfigError
from deepcompress.handlers import handler_for, known_kinds

T = TypeVar("T")
FilterFn = Callable[[nn.Module, str], bool]


def layer_kind(module: nn.Module) -> str | None:
    """The handler kind of a weight layer (``"linear"``, ``"conv2d"``, ...), else ``None``."""
    handler = handler_for(module)
    return handler.kind if handler is not None else None


def weight_identity(module: nn.Module) -> int:
    """What two modules share when their weight is tied: the weight Parameter (the codebook
    Parameter of a weight-shared module, which tied modules share too)."""
    if parametrize.is_parametrized(module, "weight"):
        return id(module.parametrizations.weight.original)
    return id(module.weight)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every weight layer of ``model`` in definition order, tied duplicates included."""
    return [(n, m) for n, m in model.named_modules() if handler_for(m) is not None]


def tied_layers(model: nn.Module, layers: list[tuple[str, nn.Module]] | None = None) -> dict[str, str]:
    """``{module name: name of the first module holding the same weight}`` for every tied duplicate
    (``layers``: the model's :func:`weight_layers`, when the caller has them already)."""
    first: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, module in weight_layers(model) if layers is None else layers:
        owner = first.setdefault(weight_identity(module), name)
        if owner != name:
            tied[name] = owner
    return tied


def check_types(types: Sequence[str] | None, what: str) -> tuple[str, ...] | None:
    """``types`` as a tuple of registered kinds (``None``: every kind), else ``ConfigError``."""
    if types is None:
        return None
    if isinstance(types, str) or not types or not all(isinstance(t, str) for t in types):
        raise ConfigError(f"{what}: expected a non-empty list of layer kinds from {list(known_kinds())}, got {types!r}")
    unknown = [t for t in types if t not in known_kinds()]
    if unknown:
        raise ConfigError(f"{what}: unknown layer kinds {unknown}; expected a subset of {list(known_kinds())}")
    return tuple(types)


def select_layers(
    model: nn.Module,
    types: Sequence[str] | None = None,
    patterns: Sequence[str] | None = None,
    ignore: Sequence[str] = (),
    filter_fn: FilterFn | None = None,
) -> list[tuple[str, nn.Module]]:
    """Return ``(name, module)`` for the selected weight layers, in definition order.

    ``types`` (handler kinds, ``None`` = all), ``patterns`` (``None`` = all names), ``ignore`` and
    ``filter_fn`` narrow the selection in that order; tied duplicates are left out. Raises
    :class:`ConfigError` for an unknown kind, for a pattern (of ``patterns`` or ``ignore``) that matches
    no weight layer, or when nothing is left to compress.
    """
    types = check_types(types, "types")
    layers = weight_layers(model)
    if not layers:
        raise ConfigError(
            f"model {type(model).__name__} has no weight layer; deepcompress compresses the weights of "
            f"the layer kinds {list(known_kinds())} (register a LayerHandler for other modules)"
        )
    names = [n for n, _ in layers]
    for pattern in [*(patterns or ()), *ignore]:
        if not any(fnmatchcase(n, pattern) for n in names):
            raise ConfigError(f"layer pattern {pattern!r} matches no weight layer; weight layers are {names}")
    tied = tied_layers(model, layers)
    chosen = [
        (n, m)
        for n, m in layers
        if n not in tied
        and (types is None or layer_kind(m) in types)
        and (patterns is None or any(fnmatchcase(n, p) for p in patterns))
        and not any(fnmatchcase(n, p) for p in ignore)
        and (filter_fn is None or filter_fn(m, n))
    ]
    if not chosen:
        raise ConfigError(
            f"no weight layer of {type(model).__name__} is selected (types {list(types) if types else 'all'}, "
            f"patterns {list(patterns) if patterns else 'all'}, ignore {list(ignore)}); weight layers are {names}"
        )
    return chosen


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


__all__ = ["FilterFn", "check_types", "layer_kind", "per_layer", "select_layers", "tied_layers", "weight_layers"]
