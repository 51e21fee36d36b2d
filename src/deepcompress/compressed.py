"""The plain-data compressed model: the contract between training and the file format.

Everything after export (entropy coding, the file writer and reader, decoding, sparse inference) is a
pure function of a :class:`CompressedModel`, so those stages are tested without training anything.

A layer's weight tensor is flattened in row-major (C) order -- for a Linear layer of shape
``(out, in)`` that is one row per output neuron, i.e. CSR order; a Conv2d kernel
``(out, in, kh, kw)`` is flattened the same way, as the paper does (section 2); an embedding table's
rows are its CSR rows. Which modules are layers, and their ``kind``, is the layer handlers' business
(:mod:`deepcompress.handlers`). Only the surviving
(nonzero) weights are stored: ``positions`` are their flat indices, ascending, and ``codes`` their
cluster indices into ``codebook`` (paper section 3). A decoded weight is exactly
``codebook[codes]`` at ``positions`` and 0.0 elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deepcompress.handlers import known_kinds

BIAS_DTYPES = ("float32", "float16", "codebook")
MAX_BIAS_VALUES = 256
"""Most distinct values of a bias stored as a ``"codebook"``."""
EXTRA_DTYPES = ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
"""numpy dtypes an uncompressed tensor may have (a bfloat16 tensor is widened to float32, exactly)."""


def _index_array(values: Any, bound: int, dtype: type[np.integer]) -> np.ndarray:
    """``values`` as a contiguous ``dtype`` array; values outside ``[0, bound)`` are kept as int64
    instead, so that narrowing cannot wrap them into range and :meth:`CompressedLayer.validate`
    reports them."""
    array = np.asarray(values)
    if array.size and array.dtype != dtype and (array.min() < 0 or array.max() >= bound):
        dtype = np.int64
    return np.ascontiguousarray(array, dtype=dtype)


@dataclass
class CompressedLayer:
    """One pruned and weight-shared layer as plain arrays.

    Attributes:
        name: the module's qualified name in the model (``"fc1"``, ``"features.0"``).
        kind: the layer handler's kind (``"linear"``, ``"conv2d"``, ``"embedding"``, ...).
        shape: the dense weight shape.
        codebook: float32 centroids, ``len(codebook) <= 2**weight_bits``.
        positions: flat (row-major) indices of the nonzero weights, strictly ascending; int32 when
            the layer has at most ``2**31`` weights, else int64.
        codes: cluster index of each position, ``0 <= codes < len(codebook)``; int32.
        bias: float32 bias of shape ``(shape[0],)`` or ``None``.
        weight_bits: bits per cluster index before entropy coding (the paper's "weight bits").
        index_bits: width of the relative sparse index (the paper's "index bits").
        attrs: layer hyper-parameters needed to run it (conv ``stride``, ``padding``, ...).
        bias_dtype: how the file stores the bias: ``"float32"`` or ``"float16"`` (half the bytes;
            the float32 ``bias`` must then hold float16 values exactly, so decoding stays bit-exact;
            a layer without a bias reads back as ``"float32"``), or ``"codebook"``: its at most 256
            distinct values, each float16-exact, stored once and indexed in a few bits (a bias
            weight-shared like the weights, see ``EncodeConfig.bias_bits``).
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    codebook: np.ndarray
    positions: np.ndarray
    codes: np.ndarray
    bias: np.ndarray | None
    weight_bits: int
    index_bits: int
    attrs: dict[str, Any] = field(default_factory=dict)
    bias_dtype: str = "float32"

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        self.codebook = np.ascontiguousarray(self.codebook, dtype=np.float32)
        # int32 where the values fit (positions of layers up to 2**31 weights, any code): 4 bytes per
        # surviving weight each instead of 8, which the reader, writer and decoder all accept
        self.positions = _index_array(self.positions, self.numel, np.int32 if self.numel <= 2**31 else np.int64)
        self.codes = _index_array(self.codes, self.codebook.size, np.int32)
        if self.bias is not None:
            self.bias = np.ascontiguousarray(self.bias, dtype=np.float32)
        self.validate()

    @property
    def numel(self) -> int:
        """Number of weights in the dense tensor."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nnz(self) -> int:
        """Number of surviving (stored) weights."""
        return int(self.positions.size)

    def validate(self) -> None:
        """Raise ``ValueError`` naming this layer if its arrays are inconsistent."""
        where = f"layer {self.name!r}"
        if self.kind not in known_kinds():
            raise ValueError(f"{where}: expected kind in {known_kinds()}, got {self.kind!r}")
        if not 1 <= self.weight_bits <= 16:
            raise ValueError(f"{where}: expected weight_bits in 1..16, got {self.weight_bits}")
        if not 1 <= self.index_bits <= 16:
            raise ValueError(f"{where}: expected index_bits in 1..16, got {self.index_bits}")
        if self.codebook.ndim != 1 or self.codebook.size > 2**self.weight_bits:
            raise ValueError(
                f"{where}: expected a 1-D codebook of at most 2**{self.weight_bits} entries, "
                f"got shape {self.codebook.shape}"
            )
        if self.positions.shape != self.codes.shape or self.positions.ndim != 1:
            raise ValueError(
                f"{where}: positions {self.positions.shape} and codes {self.codes.shape} "
                "must be 1-D arrays of equal length"
            )
        if self.positions.size:
            if self.positions[0] < 0 or self.positions[-1] >= self.numel:
                raise ValueError(f"{where}: positions must lie in [0, {self.numel})")
            if np.any(np.diff(self.positions) <= 0):
                raise ValueError(f"{where}: positions must be strictly ascending")
            if self.codes.min() < 0 or self.codes.max() >= self.codebook.size:
                raise ValueError(f"{where}: codes must lie in [0, {self.codebook.size})")
        if self.bias is not None and self.bias.shape != (self.shape[0],):
            raise ValueError(f"{where}: expected bias shape ({self.shape[0]},), got {self.bias.shape}")
        if self.bias_dtype not in BIAS_DTYPES:
            raise ValueError(f"{where}: expected bias_dtype in {BIAS_DTYPES}, got {self.bias_dtype!r}")
        if self.bias_dtype in ("float16", "codebook") and self.bias is not None:
            with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values become inf: not exact
                exact = self.bias.astype(np.float16).astype(np.float32).view(np.uint32) == self.bias.view(np.uint32)
            if not exact.all():
                raise ValueError(
                    f"{where}: bias_dtype {self.bias_dtype!r} needs a bias exactly representable in float16, but "
                    f"{int((~exact).sum())} values are not; round it first: bias.astype(np.float16).astype(np.float32)"
                )

        distinct = np.unique(self.bias).size if self.bias_dtype == "codebook" and self.bias is not None else 0
        if distinct > MAX_BIAS_VALUES:
            raise ValueError(f"{where}: bias_dtype 'codebook' holds at most {MAX_BIAS_VALUES} distinct values, got "
                             f"{distinct}; share the bias first (EncodeConfig.bias_bits)")

    def dense_weight(self) -> np.ndarray:
        """The decoded dense float32 weight: ``codebook[codes]`` at ``positions``, zero elsewhere."""
        flat = np.zeros(self.numel, dtype=np.float32)
        flat[self.positions] = self.codebook[self.codes]
        return flat.reshape(self.shape)

    def transposed(self) -> "CompressedLayer":
        """The same 2-D weight transposed, as a ``"linear"`` layer (for layers stored as (in, out),
        such as Hugging Face's ``Conv1D``, whose runtime is a Linear's)."""
        if len(self.shape) != 2:
            raise ValueError(f"layer {self.name!r}: expected a 2-D weight to transpose, got shape {self.shape}")
        rows, cols = self.shape
        new_positions = (self.positions % cols) * rows + self.positions // cols
        order = np.argsort(new_positions, kind="stable")
        return CompressedLayer(
            name=self.name, kind="linear", shape=(cols, rows), codebook=self.codebook, positions=new_positions[order],
            codes=self.codes[order], bias=self.bias, weight_bits=self.weight_bits, index_bits=self.index_bits,
            bias_dtype=self.bias_dtype,
        )


@dataclass
class CompressedModel:
    """A whole compressed network.

    Attributes:
        model_name: registry name of a built-in or registered architecture (see
            :mod:`deepcompress.models`), else the model's class name.
        layers: the compressed layers, in the model's parameter order.
        extras: every other state-dict tensor, stored exactly (numpy arrays of an ``EXTRA_DTYPES``
            dtype): biases of layers left uncompressed, BatchNorm/LayerNorm parameters and statistics.
        tied: ``{state-dict key: key it is tied to}`` for a weight that another module holds too
            (an output layer sharing the embedding); stored once, restored to both keys.
        arch: how to rebuild the architecture without the caller's module
            (:class:`deepcompress.sources.ArchRecord` as a dict), or ``None``.
        metadata: JSON-serialisable facts (dataset, input normalisation, accuracies, config).
        attachments: named byte blobs that travel with the model and are stored verbatim (a
            tokenizer's ``tokenizer.json``, a pooling config): what a deployed file needs besides its
            tensors. Names are non-empty strings; values are ``bytes``.
    """

    model_name: str
    layers: list[CompressedLayer]
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    tied: dict[str, str] = field(default_factory=dict)
    arch: dict[str, Any] | None = None
    attachments: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, blob in self.attachments.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"attachment name: expected a non-empty string, got {name!r}")
            if not isinstance(blob, bytes):
                raise ValueError(f"attachment {name!r}: expected bytes, got {type(blob).__name__}; "
                                 "encode text first: text.encode('utf-8')")
        for name, array in self.extras.items():
            if np.asarray(array).dtype.name not in EXTRA_DTYPES:
                raise ValueError(f"extra {name!r}: expected a dtype in {EXTRA_DTYPES}, got {np.asarray(array).dtype}")
        keys = {f"{layer.name}.weight" for layer in self.layers} | set(self.extras)
        for key, source in self.tied.items():
            if source not in keys or key in keys:
                raise ValueError(f"tied {key!r} -> {source!r}: expected a new key tied to a stored tensor")

    def layer(self, name: str) -> CompressedLayer:
        """Return the layer called ``name``; ``KeyError`` lists the known names."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer {name!r}; layers are {[l.name for l in self.layers]}")

    def state_dict(self) -> dict[str, np.ndarray]:
        """Dense state dict (``name.weight``, ``name.bias`` and extras) as float32 numpy arrays."""
        state: dict[str, np.ndarray] = {}
        for layer in self.layers:
            state[f"{layer.name}.weight"] = layer.dense_weight()
            if layer.bias is not None:
                state[f"{layer.name}.bias"] = layer.bias
        state.update(self.extras)
        for key, source in self.tied.items():
            state[key] = state[source]
        return state

    @property
    def dense_bytes(self) -> int:
        """Size of the uncompressed model: every weight, bias and floating-point extra at fp32, integer
        and bool extras at their own width (an int64 BatchNorm counter at 8 bytes); a tied tensor counts
        once, as a checkpoint stores it."""
        total = 0
        for layer in self.layers:
            total += 4 * layer.numel + (4 * layer.bias.size if layer.bias is not None else 0)
        for array in map(np.asarray, self.extras.values()):
            total += (4 if array.dtype.kind == "f" else array.itemsize) * int(array.size)
        return total
