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

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from deepcompress.compressed import CompressedLayer
from deepcompress.runtime.dispatch import Backend, resolve, spmm, spmv
from deepcompress.runtime.packed import PackedCodebookCSR


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


class _PackedMatmul(nn.Module):
    """``W @ x`` for a packed ``(rows, cols)`` matrix ``W`` and ``x`` of shape ``(cols, n)``.

    ``dense_batch`` is the batch size from which a dense copy of ``W`` (decoded on first use, then
    kept) is used with the dense BLAS; ``None`` never decodes. ``"auto"`` (the default) never decodes
    on the ``simd`` backend, and otherwise means :data:`DENSE_BATCH_MIN` for layers denser than
    :data:`DENSE_BATCH_DENSITY`. ``backend`` is a :class:`Backend` (resolved on every call, so a
    layer built here runs wherever it is moved).
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
        bias_t = None if bias is None else torch.from_numpy(np.array(bias, dtype=np.float32))
        self.register_buffer("bias", bias_t, persistent=False)

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

    def matmul(self, x_t: torch.Tensor) -> torch.Tensor:
        """``W @ x_t`` with ``x_t`` of shape ``(cols, n)``; returns ``(rows, n)`` without the bias."""
        n = x_t.shape[1]
        backend = resolve(self.backend, self.packed)
        dense_from = self.dense_from(backend)
        if dense_from is not None and n >= dense_from:
            return self._dense_weight() @ x_t.detach()
        if backend is Backend.TORCH:
            return torch.sparse.mm(self._fallback_csr(), x_t.detach().contiguous())
        if n == 1:
            out = np.empty(self.packed.rows, dtype=np.float32)
            spmv(backend, self.packed, np.ascontiguousarray(x_t.detach().numpy()[:, 0]), out)
            return torch.from_numpy(out).unsqueeze(1)
        out = np.empty((self.packed.rows, n), dtype=np.float32)
        spmm(backend, self.packed, np.ascontiguousarray(x_t.detach().numpy()), out)
        return torch.from_numpy(out)


class SparseCodebookLinear(_PackedMatmul):
    """A ``nn.Linear`` replacement computing ``x @ W.T + b`` from the packed codebook weights.

    Args:
        packed: the weight, ``(out_features, in_features)``.
        bias: float32 ``(out_features,)`` or ``None``.
        dense_batch: batch size from which a decoded dense weight is used (see :class:`_PackedMatmul`).
        backend: ``"auto"``, ``"simd"``, ``"numba"`` or ``"torch"`` (see :mod:`deepcompress.runtime.dispatch`).
    """

    def __init__(
        self,
        packed: PackedCodebookCSR,
        bias: np.ndarray | None = None,
        dense_batch: int | None | str = "auto",
        backend: str | Backend = Backend.AUTO,
    ) -> None:
        super().__init__(packed, bias, dense_batch, backend)
        self.in_features = packed.cols
        self.out_features = packed.rows

    @classmethod
    def from_compressed(
        cls, layer: CompressedLayer, dense_batch: int | None | str = "auto", backend: str | Backend = Backend.AUTO
    ) -> "SparseCodebookLinear":
        """Build from a ``"linear"`` :class:`CompressedLayer`."""
        _check_kind(layer, "linear")
        if len(layer.shape) != 2:
            raise ValueError(f"layer {layer.name!r}: expected a 2-D linear weight, got shape {layer.shape}")
        return cls(PackedCodebookCSR.from_layer(layer), layer.bias, dense_batch, backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, "SparseCodebookLinear")
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"SparseCodebookLinear: expected input (..., {self.in_features}), got {tuple(x.shape)}"
            )
        lead = x.shape[:-1]
        x2 = x.detach().reshape(-1, self.in_features)
        backend = resolve(self.backend, self.packed)
        if x2.shape[0] == 1 and backend is not Backend.TORCH:  # the latency path: no transposes, bias in place
            out = np.empty(self.out_features, dtype=np.float32)
            spmv(backend, self.packed, np.ascontiguousarray(x2.numpy()[0]), out)
            if self.bias is not None:
                out += self.bias.numpy()
            return torch.from_numpy(out).reshape(*lead, self.out_features)
        y = self.matmul(x2.t()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        p = self.packed
        return (
            f"in_features={p.cols}, out_features={p.rows}, nnz={p.nnz}, code_bits={p.code_bits}, "
            f"backend={self.backend.value}"
        )


class SparseCodebookConv2d(_PackedMatmul):
    """A ``nn.Conv2d`` replacement: im2col (``F.unfold``) times the packed kernel matrix.

    The kernel ``(out, in, kh, kw)`` is the ``(out, in*kh*kw)`` matrix of the paper's section 2
    flattening. All images of a batch are unfolded side by side into one ``(in*kh*kw, N*L)`` matrix, so
    one kernel call reuses each decoded weight across every output position.
    ``groups`` must be 1 (grouped convolutions are decoded to dense by :func:`to_sparse_module`).
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
    ) -> None:
        super().__init__(packed, bias, dense_batch=None, backend=backend)
        kh, kw = kernel_size
        if packed.cols % (kh * kw):
            raise ValueError(
                f"expected the packed kernel's {packed.cols} columns to be a multiple of {kh}x{kw}"
            )
        self.in_channels = packed.cols // (kh * kw)
        self.out_channels = packed.rows
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
    ) -> "SparseCodebookConv2d":
        """Build from a ``"conv2d"`` :class:`CompressedLayer` of shape ``(out, in, kh, kw)``."""
        _check_kind(layer, "conv2d")
        if len(layer.shape) != 4:
            raise ValueError(f"layer {layer.name!r}: expected a 4-D conv weight, got shape {layer.shape}")
        packed = PackedCodebookCSR.from_layer(layer)
        return cls(packed, layer.bias, (layer.shape[2], layer.shape[3]), stride, padding, dilation, backend)

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
        cols = F.unfold(x, self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride)
        cols = cols.permute(1, 0, 2).reshape(cols.shape[1], n * oh * ow)  # (in*kh*kw, N*L)
        y = self.matmul(cols).reshape(self.out_channels, n, oh, ow).permute(1, 0, 2, 3)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y.contiguous()

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, nnz={self.packed.nnz}"
        )
