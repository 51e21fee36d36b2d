"""Which kernel multiplies by a packed layer: the AVX-512 C kernel, numba, or torch's sparse CSR.

The paper times pruned layers with sparse BLAS (section 6.1, Table 8) and notes that its quantized
weights could not be timed that way; the first two backends compute straight from the codebook
indices. ``auto`` takes the fastest one available for the layer's layout: ``simd`` where the extension
is built, the CPU runs AVX-512 and the words are 16-bit; else ``numba``; else ``torch``. Asking for a
backend that cannot run raises a :class:`ConfigError` that says why and what to use instead.
"""

from __future__ import annotations

import numpy as np

from deepcompress.choices import Choice
from deepcompress.errors import ConfigError
from deepcompress.runtime import kernels
from deepcompress.runtime.packed import PackedCodebookCSR


class Backend(Choice):
    """The kernel a sparse codebook layer runs on (see the module docstring)."""

    AUTO = "auto"
    SIMD = "simd"
    NUMBA = "numba"
    TORCH = "torch"


def simd_accepts(packed: PackedCodebookCSR) -> bool:
    """Whether the C kernels take this layout: uint16 words (codebooks of <= 256 entries) and int32
    block pointers (fewer than 2**31 nonzeros). Wider layouts run on the numba kernels."""
    return (
        packed.words.dtype == np.uint16 and packed.ptr.dtype == np.int32
        and packed.words.flags.c_contiguous and packed.ptr.flags.c_contiguous
    )


def resolve(backend: str | Backend, packed: PackedCodebookCSR) -> Backend:
    """The concrete backend that runs ``packed`` for the request ``backend``."""
    chosen = Backend.parse(backend, "backend")
    simd_ok = kernels.HAVE_SIMD and simd_accepts(packed)
    if chosen is Backend.AUTO:
        return Backend.SIMD if simd_ok else Backend.NUMBA if kernels.HAVE_NUMBA else Backend.TORCH
    if chosen is Backend.SIMD and not kernels.HAVE_SIMD:
        raise ConfigError(
            "backend 'simd': the AVX-512 extension is not available (not built, or this CPU lacks "
            "AVX-512 F/BW/VL); use 'auto', which falls back to numba or torch"
        )
    if chosen is Backend.SIMD and not simd_ok:
        raise ConfigError(
            f"backend 'simd' expected 16-bit words and int32 pointers (<= 8-bit codebooks, < 2**31 "
            f"nonzeros), got {packed.words.dtype} words and {packed.ptr.dtype} pointers; use 'auto' or 'numba'"
        )
    if chosen is Backend.NUMBA and not kernels.HAVE_NUMBA:
        raise ConfigError("backend 'numba': numba is not installed (pip install numba); use 'auto'")
    return chosen


def available_backends() -> list[str]:
    """The backends this installation can run (for results files and error messages)."""
    names = [Backend.SIMD.value] if kernels.HAVE_SIMD else []
    return names + ([Backend.NUMBA.value] if kernels.HAVE_NUMBA else []) + [Backend.TORCH.value]


def spmv(backend: Backend, packed: PackedCodebookCSR, x: np.ndarray, out: np.ndarray) -> None:
    """``out = W @ x`` for contiguous float32 ``x (cols,)`` and ``out (rows,)`` on ``numba``.

    (The ``simd`` backend's kernels are bound once per layer: see :mod:`deepcompress.runtime.plan`.)"""
    if backend is not Backend.NUMBA:
        raise ValueError(f"expected backend 'numba', got {backend!r}")
    kernels.spmv(packed.ptr, packed.words, packed.codebook, packed.n_blocks, packed.code_bits, packed.col_bits, x, out)


def spmm(backend: Backend, packed: PackedCodebookCSR, x: np.ndarray, out: np.ndarray) -> None:
    """``out = W @ x`` for C-contiguous float32 ``x (cols, n)`` and ``out (rows, n)`` on ``numba``."""
    if backend is not Backend.NUMBA:
        raise ValueError(f"expected backend 'numba', got {backend!r}")
    kernels.spmm(packed.ptr, packed.words, packed.codebook, packed.n_blocks, packed.code_bits, packed.col_bits, x, out)
