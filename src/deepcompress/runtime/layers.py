"""Inference layers that compute straight from the compressed form (paper sections 2-3, Table 8).

:class:`SparseCodebookLinear` and :class:`SparseCodebookConv2d` hold a :class:`PackedCodebookCSR`
(2 bytes per surviving weight for <= 8-bit codebooks) and never build the dense weight. They run the
backend :mod:`deepcompress.runtime.dispatch` picks: the AVX-512 C kernels or the numba kernels (a
row-parallel sparse matrix-vector product at batch 1; for larger batches a product that reuses each
decoded weight across the batch), or torch's sparse CSR product on codebook-expanded fp32 values
(correct, slower, 8 bytes per weight).

These modules are CPU-only and inference-only: outputs carry no gradient, and the packed weights are
plain arrays rather than parameters, so a state dict holds no weights for them.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from deepcompress.compressed import CompressedLayer
from deepcompress.errors import ConfigError
from deepcompress.runtime import kernels, simd
from deepcompress.runtime.dispatch import Backend, resolve, spmm, spmv
from deepcompress.runtime.packed import PackedCodebookCSR
from deepcompress.runtime.plan import Format, bind, choose, layout_name, require_int8


def _check_input(x: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what}: expected a torch.Tensor input, got {type(x).__name__}")
    if x.dtype != torch.float32 or x.device.type != "cpu":
        raise TypeError(
            f"{what}: expected a float32 CPU tensor, got {x.dtype} on {x.device}; "
            "call .float().cpu() first (the sparse runtime is CPU fp32 only)"
        )


def _check_kind(layer: CompressedLayer, kind: str) -> None:
    if not isinstance(layer, CompressedLayer):
        raise TypeError(f"expected a CompressedLayer, got {type(layer).__name__}")
    if layer.kind != kind:
        raise ValueError(f"layer {layer.name!r}: expected kind {kind!r}, got {layer.kind!r}")


# Without the AVX-512 kernel, at or above this batch, layers denser than DENSE_BATCH_DENSITY decode a
# dense weight once and call the dense BLAS: benchmarks/fc.py measured the numba batch kernel no faster
# than dense GEMM at batch 64 for the paper's 23-25% dense fc8 layers, and 1.2-2.5x faster for the 4-9%
# dense ones. The AVX-512 batch kernel keeps its output tile in registers and needs no dense copy.
DENSE_BATCH_MIN = 16
DENSE_BATCH_DENSITY = 0.15


_SIMD_REQUESTS = (Backend.AUTO, Backend.SIMD)
_FLOAT32 = torch.float32


class _PackedMatmul(nn.Module):
    """``W @ x`` for a packed ``(rows, cols)`` matrix ``W`` and ``x`` of shape ``(cols, n)``.

    ``dense_batch`` is the batch size from which a dense copy of ``W`` (decoded on first use, then
    kept) is used with the dense BLAS; ``None`` never decodes. ``"auto"`` (the default) never decodes
    on the ``simd`` backend, and otherwise means :data:`DENSE_BATCH_MIN` for layers denser than
    :data:`DENSE_BATCH_DENSITY`. ``backend`` is a :class:`Backend` (resolved on every call, so a
    layer built here runs wherever it is moved). On the ``simd`` backend, batch-1 products of a
    linear layer run on the layout :mod:`deepcompress.runtime.plan` picks (``format``); larger
    batches and convolutions run on the packed CSR with the output tile in registers.
    """

    def __init__(
        self,
        packed: PackedCodebookCSR,
        bias: np.ndarray | None,
        dense_batch: int | None | str = "auto",
        backend: str | Backend = Backend.AUTO,
    ) -> None:
        super().__init__()
        self.packed = packed
        if dense_batch != "auto" and dense_batch is not None and (
            not isinstance(dense_batch, int) or isinstance(dense_batch, bool) or dense_batch < 1
        ):
            raise ValueError(f"expected dense_batch 'auto', None or an int >= 1, got {dense_batch!r}")
        self.dense_batch = dense_batch
        self.backend = Backend.parse(backend, "backend")
        self._dense: torch.Tensor | None = None  # decoded on first large batch
        self._csr: torch.Tensor | None = None  # torch fallback, built on first use
        self._bias_np = None if bias is None else np.array(bias, dtype=np.float32)  # the kernels add it in place
        self.register_buffer("bias", None if bias is None else torch.from_numpy(self._bias_np), persistent=False)
        self._csr_args = self._bind_csr()

    def _bind_csr(self) -> tuple[int, ...]:
        """The packed CSR's fixed arguments of the extension's ``csr_spmm`` (addresses and sizes)."""
        p = self.packed
        return (p.ptr.ctypes.data, p.words.ctypes.data, p.codebook.ctypes.data, p.n_blocks, p.code_bits,
                p.col_bits, p.rows, p.nnz)

    def __getstate__(self) -> dict:
        """Bound addresses point into this object's arrays: a copy rebinds them (see ``__setstate__``)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_csr_args", "_spmv")}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._csr_args = self._bind_csr()
        if "_layout" in state:
            self._spmv = None  # rebound from the copied layout on first use

    def dense_from(self, backend: Backend) -> int | None:
        """The batch size from which ``backend`` uses the decoded dense weight (``None``: never)."""
        if self.dense_batch != "auto":
            return self.dense_batch  # type: ignore[return-value]
        density = self.packed.nnz / max(self.packed.rows * self.packed.cols, 1)
        return None if backend is Backend.SIMD or density <= DENSE_BATCH_DENSITY else DENSE_BATCH_MIN

    def _fallback_csr(self) -> torch.Tensor:
        if self._csr is None:
            crow, col, values = self.packed.csr_arrays()
            with warnings.catch_warnings():  # torch flags sparse CSR as beta on every construction
                warnings.simplefilter("ignore", UserWarning)
                self._csr = torch.sparse_csr_tensor(
                    torch.from_numpy(crow), torch.from_numpy(col), torch.from_numpy(values),
                    size=(self.packed.rows, self.packed.cols), check_invariants=True,
                )
        return self._csr

    def _dense_weight(self) -> torch.Tensor:
        if self._dense is None:
            crow, col, values = self.packed.csr_arrays()
            dense = np.zeros((self.packed.rows, self.packed.cols), dtype=np.float32)
            dense[np.repeat(np.arange(self.packed.rows), np.diff(crow)), col] = values
            self._dense = torch.from_numpy(dense)
        return self._dense

    def matmul(self, x_t: torch.Tensor, with_bias: bool = False) -> torch.Tensor:
        """``W @ x_t`` (``+ bias[:, None]`` when ``with_bias``) with ``x_t`` of shape ``(cols, n)``;
        returns ``(rows, n)``."""
        n = x_t.shape[1]
        backend = resolve(self.backend, self.packed)
        dense_from = self.dense_from(backend)
        if backend is Backend.SIMD and (dense_from is None or n < dense_from):
            x = x_t.detach().contiguous()
            out = torch.empty((self.packed.rows, n), dtype=torch.float32)
            bias = self._bias_np.ctypes.data if with_bias and self._bias_np is not None else 0
            simd.LIB.csr_spmm(*self._csr_args, x.data_ptr(), n, out.data_ptr(), bias)  # type: ignore[union-attr]
            return out
        if dense_from is not None and n >= dense_from:
            y = self._dense_weight() @ x_t.detach()
        elif backend is Backend.TORCH:
            y = torch.sparse.mm(self._fallback_csr(), x_t.detach().contiguous())
        elif n == 1:
            out = np.empty(self.packed.rows, dtype=np.float32)
            spmv(backend, self.packed, np.ascontiguousarray(x_t.detach().numpy()[:, 0]), out)
            y = torch.from_numpy(out).unsqueeze(1)
        else:
            out = np.empty((self.packed.rows, n), dtype=np.float32)
            spmm(backend, self.packed, np.ascontiguousarray(x_t.detach().numpy()), out)
            y = torch.from_numpy(out)
        return y + self.bias[:, None] if with_bias and self.bias is not None else y


class SparseCodebookLinear(_PackedMatmul):
    """A ``nn.Linear`` replacement computing ``x @ W.T + b`` from the packed codebook weights.

    Args:
        packed: the weight, ``(out_features, in_features)``.
        bias: float32 ``(out_features,)`` or ``None``.
        dense_batch: batch size from which a decoded dense weight is used (see :class:`_PackedMatmul`).
        backend: ``"auto"``, ``"simd"``, ``"numba"`` or ``"torch"`` (see :mod:`deepcompress.runtime.dispatch`).
        format: the batch-1 layout on the ``simd`` backend: ``"auto"`` (measured now, on this machine),
            ``"csr"``, ``"sliced"`` or ``"dense"`` (see :mod:`deepcompress.runtime.plan`). The choice
            is kept in :attr:`format` and the timings behind it in :attr:`format_us`. ``"int8"``
            (opt-in, never chosen by ``"auto"``) runs batch-1 products with int8 weights and inputs
            (:class:`~deepcompress.runtime.formats.Int8Codes`), close to but not equal to fp32;
            larger batches still run the fp32 packed CSR product. It raises ``ConfigError`` naming
            what is missing where the extension or the CPU's AVX-512 VBMI/VNNI is not there.
    """

    def __init__(
        self,
        packed: PackedCodebookCSR,
        bias: np.ndarray | None = None,
        dense_batch: int | None | str = "auto",
        backend: str | Backend = Backend.AUTO,
        format: str | Format = Format.AUTO,
    ) -> None:
        super().__init__(packed, bias, dense_batch, backend)
        self.in_features = packed.cols
        self.out_features = packed.rows
        self._in_shape = (1, packed.cols)
        self.format_request = Format.parse(format, "format")
        self.format: Format | None = None  # set when the simd backend first runs this layer
        self.parallel = True  # whether the batch-1 kernel uses the extension's pool (measured with format)
        self.format_us: dict[str, float] = {}
        self._layout: object | None = None
        self._spmv: Callable[[int, int], None] | None = None
        if self.format_request is Format.INT8:
            require_int8()
        if self.format_request is not Format.AUTO and resolve(self.backend, packed) is not Backend.SIMD:
            raise ConfigError(f"format {self.format_request.value!r} runs on the 'simd' backend only; use format='auto'")
        if resolve(self.backend, packed) is Backend.SIMD:
            self._batch1_kernel()

    def _batch1_kernel(self) -> Callable[[int, int], None]:
        """The bound batch-1 kernel: planned (and measured, for ``format="auto"``) on first need."""
        if self._spmv is None:
            if self._layout is None:
                chosen = choose(self.packed, self._bias_np, self.format_request)
                self.format, self.parallel, self._layout, self._spmv, self.format_us = chosen
            else:  # a copy or an unpickled module: bind its own copy of the chosen layout
                self._spmv = bind(self.format, self._layout, self._bias_np, self.parallel)  # type: ignore[arg-type]
        return self._spmv

    @classmethod
    def from_compressed(
        cls, layer: CompressedLayer, dense_batch: int | None | str = "auto", backend: str | Backend = Backend.AUTO,
        format: str | Format = Format.AUTO,
    ) -> "SparseCodebookLinear":
        """Build from a ``"linear"`` :class:`CompressedLayer`."""
        _check_kind(layer, "linear")
        if len(layer.shape) != 2:
            raise ValueError(f"layer {layer.name!r}: expected a 2-D linear weight, got shape {layer.shape}")
        return cls(PackedCodebookCSR.from_layer(layer), layer.bias, dense_batch, backend, format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spmv = self._spmv
        if (spmv is not None and type(x) is torch.Tensor and x.shape == self._in_shape and x.dtype is _FLOAT32
                and x.is_cpu and x.is_contiguous() and kernels.HAVE_SIMD and self.backend in _SIMD_REQUESTS):
            # the latency path: one call into the extension, which adds the bias. Every torch call here
            # costs ~5 us when the caches are cold (measured), so there are as few as the checks allow.
            out = torch.empty(1, self.out_features, dtype=_FLOAT32)
            spmv(x.data_ptr(), out.data_ptr())
            return out
        _check_input(x, "SparseCodebookLinear")
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"SparseCodebookLinear: expected input (..., {self.in_features}), got {tuple(x.shape)}"
            )
        lead = x.shape[:-1]
        x2 = x.detach().reshape(-1, self.in_features)
        backend = resolve(self.backend, self.packed)
        if x2.shape[0] == 1 and backend is Backend.SIMD:
            out = torch.empty(self.out_features, dtype=torch.float32)
            self._batch1_kernel()(x2.contiguous().data_ptr(), out.data_ptr())
            return out.reshape(*lead, self.out_features)
        return self.matmul(x2.t(), with_bias=True).t().reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        p = self.packed
        fmt = (f", format={layout_name(self.format, self._layout)}, threads={'pool' if self.parallel else 1}"
               if self.format is not None else "")
        times = ", format_us={" + ", ".join(f"{k}: {v:.1f}" for k, v in self.format_us.items()) + "}" if self.format_us else ""
        return (
            f"in_features={p.cols}, out_features={p.rows}, nnz={p.nnz}, code_bits={p.code_bits}, "
            f"backend={self.backend.value}{fmt}{times}"
        )


class SparseCodebookConv2d(_PackedMatmul):
    """A ``nn.Conv2d`` replacement: im2col (``F.unfold``) times the packed kernel matrix.

    The kernel ``(out, in / groups, kh, kw)`` is the ``(out, in*kh*kw)`` matrix of the paper's section 2
    flattening; a grouped (or depthwise) kernel is packed as the block-diagonal ``(out, in*kh*kw)``
    matrix of all groups, whose zeros cost nothing in a sparse layout, so one product covers every
    group. At batch 1 on the C extension a stride-1 convolution never builds the im2col matrix: the
    kernel reads each nonzero's shifted input window straight from a zero-padded copy of the image
    (see ``csr_conv`` in ``_simd.c``); a strided one multiplies the unfolded input ``(in*kh*kw, oh*ow)``,
    which is already the kernels' ``x`` and whose output ``(out, oh*ow)`` is already the result's
    layout (a 1x1, stride-1, unpadded convolution skips the unfold). The C kernels keep a 64-pixel
    tile of an output row in registers and add the bias.
    Larger batches unfold every image side by side into one ``(in*kh*kw, N*L)`` matrix.
    """

    def __init__(
        self,
        packed: PackedCodebookCSR,
        bias: np.ndarray | None,
        kernel_size: tuple[int, int],
        stride: tuple[int, int] = (1, 1),
        padding: tuple[int, int] = (0, 0),
        dilation: tuple[int, int] = (1, 1),
        backend: str | Backend = Backend.AUTO,
        groups: int = 1,
    ) -> None:
        super().__init__(packed, bias, dense_batch=None, backend=backend)
        kh, kw = kernel_size
        if packed.cols % (kh * kw):
            raise ValueError(
                f"expected the packed kernel's {packed.cols} columns to be a multiple of {kh}x{kw}"
            )
        self.in_channels = packed.cols // (kh * kw)
        self.out_channels = packed.rows
        if groups < 1 or self.in_channels % groups or self.out_channels % groups:
            raise ValueError(
                f"expected groups to divide {self.in_channels} input and {self.out_channels} output channels, "
                f"got {groups}"
            )
        self.groups = int(groups)
        self.kernel_size = (int(kh), int(kw))
        self.stride = tuple(int(s) for s in stride)
        self.padding = tuple(int(s) for s in padding)
        self.dilation = tuple(int(s) for s in dilation)

    @classmethod
    def from_compressed(
        cls,
        layer: CompressedLayer,
        stride: tuple[int, int] = (1, 1),
        padding: tuple[int, int] = (0, 0),
        dilation: tuple[int, int] = (1, 1),
        backend: str | Backend = Backend.AUTO,
        groups: int = 1,
    ) -> "SparseCodebookConv2d":
        """Build from a ``"conv2d"`` :class:`CompressedLayer` of shape ``(out, in / groups, kh, kw)``."""
        _check_kind(layer, "conv2d")
        if len(layer.shape) != 4:
            raise ValueError(f"layer {layer.name!r}: expected a 4-D conv weight, got shape {layer.shape}")
        out, in_g, kh, kw = layer.shape
        if groups < 1 or out % groups:
            raise ValueError(f"layer {layer.name!r}: expected groups dividing {out} output channels, got {groups}")
        if groups > 1:  # the block-diagonal (out, in*kh*kw) matrix of all groups
            row, rest = np.divmod(layer.positions, in_g * kh * kw)
            shift = (row // (out // groups)) * (in_g * kh * kw)
            width = groups * in_g * kh * kw
            layer = replace(layer, shape=(out, groups * in_g, kh, kw), positions=row * width + shift + rest)
        packed = PackedCodebookCSR.from_layer(layer)
        return cls(packed, layer.bias, (kh, kw), stride, padding, dilation, backend, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, "SparseCodebookConv2d")
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"SparseCodebookConv2d: expected input (N, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        n, _, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        pointwise = (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0)
        if n == 1 and (sh, sw) == (1, 1) and not pointwise and resolve(self.backend, self.packed) is Backend.SIMD:
            out = torch.empty((1, self.out_channels, oh, ow), dtype=torch.float32)
            bias = self._bias_np.ctypes.data if self._bias_np is not None else 0
            simd.LIB.csr_conv(*self._csr_args, x.contiguous().data_ptr(), self.in_channels, h, w,  # type: ignore[union-attr]
                              kh, kw, ph, pw, dh, dw, out.data_ptr(), bias)
            return out
        if n == 1:
            cols = x.reshape(self.in_channels, h * w) if pointwise else F.unfold(
                x, self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride)[0]
            return self.matmul(cols, with_bias=True).reshape(1, self.out_channels, oh, ow)
        cols = F.unfold(x, self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride)
        cols = cols.permute(1, 0, 2).reshape(cols.shape[1], n * oh * ow)  # (in*kh*kw, N*L)
        y = self.matmul(cols, with_bias=True).reshape(self.out_channels, n, oh, ow).permute(1, 0, 2, 3)
        return y.contiguous()

    def extra_repr(self) -> str:
        groups = f", groups={self.groups}" if self.groups > 1 else ""
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}{groups}, nnz={self.packed.nnz}"
        )
