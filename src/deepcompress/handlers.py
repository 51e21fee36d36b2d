"""Layer handlers: the one place that knows each kind of weight layer.

A handler owns everything deepcompress needs to know about one kind of module: which modules it
takes (``isinstance``, so subclasses count; or a class name, for classes we must not import), the
``kind`` string recorded in the file, the hyper-parameters stored beside the weights (``attrs``),
and the sparse runtime module that computes from the compressed form, where one exists. The
compressed tensor is always the module's ``weight`` parameter, flattened row-major (for a Linear,
one row per output neuron: CSR order, paper section 2); the bias, when the module has one, is stored
beside it. Every other place asks :func:`handler_for` instead of listing layer classes, so a new
kind of layer is one :func:`register_handler` call.

Decoding to a dense module needs no handler: the decoded weight is written into the caller's
module. Handlers without a sparse runtime decode that layer densely under ``runtime="sparse"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from deepcompress.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from deepcompress.compressed import CompressedLayer

SparseFactory = Callable[["CompressedLayer", nn.Module, dict[str, Any]], "nn.Module | None"]
"""``(layer, module, options) -> runtime module``, or ``None`` to keep ``module`` with decoded weights.
``options`` holds the runtime choices (``backend``, ``conv_mode``, ``format``)."""


@dataclass(frozen=True)
class LayerHandler:
    """How one kind of weight layer is compressed, described and run.

    Attributes:
        kind: the name stored in the file (``"linear"``, ``"conv2d"``, ...); unique in the registry.
        classes: module classes handled, matched with ``isinstance`` (subclasses count).
        class_names: class names matched anywhere in a module's MRO, for classes of packages we must
            not import (Hugging Face's ``Conv1D``).
        attrs: the hyper-parameters recorded with the layer (the runtime needs them; the dense
            rebuild uses the caller's module).
        sparse: the sparse runtime factory, or ``None`` when this kind always runs dense.
    """

    kind: str
    classes: tuple[type[nn.Module], ...] = ()
    class_names: tuple[str, ...] = ()
    attrs: Callable[[nn.Module], dict[str, Any]] = field(default=lambda module: {})
    sparse: SparseFactory | None = None

    def matches(self, module: nn.Module) -> bool:
        """Whether ``module`` is of this kind and has a weight tensor to compress."""
        if not _has_weight(module):
            return False
        if self.classes and isinstance(module, self.classes):
            return True
        return any(cls.__name__ in self.class_names for cls in type(module).__mro__)


def _has_weight(module: nn.Module) -> bool:
    """A ``weight`` parameter, plain or parametrized (read without computing a parametrized weight)."""
    return parametrize.is_parametrized(module, "weight") or isinstance(getattr(module, "weight", None), torch.Tensor)


def _conv_attrs(module: nn.Module) -> dict[str, Any]:
    """Stride, padding, dilation and groups of a convolution (string padding such as "same" as is)."""
    padding = module.padding if isinstance(module.padding, str) else list(module.padding)
    attrs = {"stride": list(module.stride), "padding": padding, "dilation": list(module.dilation), "groups": int(module.groups)}
    if module.padding_mode != "zeros":
        attrs["padding_mode"] = module.padding_mode
    return attrs


def _embedding_attrs(module: nn.Module) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if module.padding_idx is not None:
        attrs["padding_idx"] = int(module.padding_idx)
    if isinstance(module, nn.EmbeddingBag):
        attrs["mode"] = module.mode
    return attrs


def _sparse_linear(layer: CompressedLayer, module: nn.Module, options: dict[str, Any]) -> nn.Module:
    from deepcompress.runtime.layers import SparseCodebookLinear

    return SparseCodebookLinear.from_compressed(layer, backend=options["backend"], format=options["format"])


def _sparse_hf_conv1d(layer: CompressedLayer, module: nn.Module, options: dict[str, Any]) -> nn.Module:
    """GPT-2's ``Conv1D`` computes ``x @ W + b`` with ``W`` of shape (in, out): the transposed layer
    is an ordinary Linear, so it runs on the same kernels. Its bias (indexed by output, not by the
    stored rows) travels as an extra and is already loaded into ``module``."""
    from deepcompress.runtime.layers import SparseCodebookLinear

    bias = module.bias.detach().cpu().float().numpy() if module.bias is not None else None
    return SparseCodebookLinear.from_compressed(replace(layer.transposed(), bias=bias), backend=options["backend"],
                                                format=options["format"])


def _sparse_conv2d(layer: CompressedLayer, module: nn.Module, options: dict[str, Any]) -> nn.Module | None:
    from deepcompress.runtime.layers import SparseCodebookConv2d
    from deepcompress.runtime.sparse import ConvMode

    plain = module.padding_mode == "zeros" and not isinstance(module.padding, str)
    if options["conv_mode"] is not ConvMode.SPARSE or not plain:
        return None
    return SparseCodebookConv2d.from_compressed(
        layer, stride=module.stride, padding=module.padding, dilation=module.dilation, groups=module.groups,
        backend=options["backend"],
    )


def _sparse_embedding(layer: CompressedLayer, module: nn.Module, options: dict[str, Any]) -> nn.Module | None:
    from deepcompress.runtime.embedding import SparseCodebookEmbedding

    if type(module) is not nn.Embedding or module.max_norm is not None:
        return None  # subclasses may change forward; max_norm renormalises rows in place
    return SparseCodebookEmbedding.from_compressed(layer, padding_idx=module.padding_idx)


_REGISTRY: list[LayerHandler] = [
    LayerHandler("linear", (nn.Linear,), sparse=_sparse_linear),
    LayerHandler("conv1d", (nn.Conv1d,), attrs=_conv_attrs),
    LayerHandler("conv2d", (nn.Conv2d,), attrs=_conv_attrs, sparse=_sparse_conv2d),
    LayerHandler("conv3d", (nn.Conv3d,), attrs=_conv_attrs),
    LayerHandler("embedding", (nn.Embedding,), attrs=_embedding_attrs, sparse=_sparse_embedding),
    LayerHandler("embedding_bag", (nn.EmbeddingBag,), attrs=_embedding_attrs),
    LayerHandler("hf_conv1d", class_names=("Conv1D",), sparse=_sparse_hf_conv1d),
]


def register_handler(handler: LayerHandler) -> None:
    """Add ``handler`` in front of the built-in ones (so it wins for subclasses of built-in classes).

    Registering a kind that already exists replaces that handler.
    """
    if not isinstance(handler, LayerHandler):
        raise TypeError(f"expected a LayerHandler, got {type(handler).__name__}")
    if not handler.classes and not handler.class_names:
        raise ConfigError(f"handler {handler.kind!r}: expected classes or class_names to match, got neither")
    _REGISTRY[:] = [handler] + [h for h in _REGISTRY if h.kind != handler.kind]


def handler_for(module: nn.Module) -> LayerHandler | None:
    """The first registered handler that takes ``module``, or ``None`` if it is not a weight layer."""
    return next((h for h in _REGISTRY if h.matches(module)), None)


def handler_of_kind(kind: str) -> LayerHandler:
    """The handler recorded as ``kind`` in a file; ``CheckpointError`` lists the known kinds."""
    for handler in _REGISTRY:
        if handler.kind == kind:
            return handler
    raise CheckpointError(f"unknown layer kind {kind!r}; known kinds are {known_kinds()}")


def known_kinds() -> tuple[str, ...]:
    """Every registered kind, as a file may name it."""
    return tuple(h.kind for h in _REGISTRY)


__all__ = ["LayerHandler", "handler_for", "handler_of_kind", "known_kinds", "register_handler"]
