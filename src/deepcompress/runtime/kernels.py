"""numba kernels that multiply by a :class:`PackedCodebookCSR` matrix without decoding it (the portable
backend; the AVX-512 kernels and their thread pool live in the C extension, :mod:`deepcompress.runtime.simd`).

Hand-written with numba because no library kernel reads codebook indices: BLAS and sparse BLAS want
fp32 values (the paper's section 5 notes this too: "BLAS libraries don't support indirect look-up and
relative indexing"). Each inner step loads one packed word, looks the weight up in the (L1-resident)
codebook and multiplies by the input at that column. Large products split rows across threads with
``prange``; small ones run on one thread, since waking a thread pool costs more than they take.

numba is optional: :data:`HAVE_NUMBA` (from :mod:`deepcompress.jit`, the one place that imports
numba) is ``False`` without it and, without the C extension too, the layers in
:mod:`deepcompress.runtime.layers` fall back to torch's sparse CSR product.
:mod:`deepcompress.runtime.dispatch` chooses among them.
"""

from __future__ import annotations

import numpy as np

from deepcompress.jit import HAVE_NUMBA, numba
from deepcompress.runtime import simd

HAVE_SIMD: bool = simd.HAVE_SIMD

# Below this many multiply-adds a product runs on one thread (measured: a parallel launch costs
# tens of microseconds with an idle pool, far more on an oversubscribed machine).
PARALLEL_MIN_WORK = 1 << 16

if numba is not None:

    # No fastmath here: with it LLVM vectorises the loop into AVX-512 gathers, measured 1.2-1.5x slower
    # than this scalar loop. Every index is unsigned (uint64 offsets, uint32 words) so numba emits no
    # negative-index wraparound fix-up (sar/cmp/cmov per load; measured 1.6x on a plain CSR loop).
    @numba.njit(cache=True, inline="always")
    def _row_dot(ptr, words, codebook, n_blocks, shift, mask, col_bits, x, r):  # type: ignore[no-untyped-def]
        """Row ``r`` times ``x``; four accumulators break the add latency chain (1.2x over one)."""
        acc0 = np.float32(0.0)
        acc1 = np.float32(0.0)
        acc2 = np.float32(0.0)
        acc3 = np.float32(0.0)
        one = np.uint64(1)
        four = np.uint64(4)
        base = r * n_blocks
        for b in range(n_blocks):
            xb = x[b << col_bits:]
            k = np.uint64(ptr[base + b])
            end = np.uint64(ptr[base + b + 1])
            while k + four <= end:
                w0 = np.uint32(words[k])
                w1 = np.uint32(words[k + one])
                w2 = np.uint32(words[k + np.uint64(2)])
                w3 = np.uint32(words[k + np.uint64(3)])
                acc0 += codebook[w0 & mask] * xb[w0 >> shift]
                acc1 += codebook[w1 & mask] * xb[w1 >> shift]
                acc2 += codebook[w2 & mask] * xb[w2 >> shift]
                acc3 += codebook[w3 & mask] * xb[w3 >> shift]
                k += four
            while k < end:
                w0 = np.uint32(words[k])
                acc0 += codebook[w0 & mask] * xb[w0 >> shift]
                k += one
        return (acc0 + acc1) + (acc2 + acc3)

    @numba.njit(fastmath=True, cache=True, inline="always")
    def _row_times(ptr, words, codebook, n_blocks, shift, mask, col_bits, x, row, r):  # type: ignore[no-untyped-def]
        """``row[:] = W[r] @ x`` for ``x`` of shape ``(cols, batch)``: each decoded weight is reused
        across the batch, and the inner loop runs over contiguous batch entries (vectorised)."""
        row[:] = 0.0
        base = r * n_blocks
        for b in range(n_blocks):
            xb = x[b << col_bits:]
            for k in range(np.uint64(ptr[base + b]), np.uint64(ptr[base + b + 1])):
                w = np.uint32(words[k])
                v = codebook[w & mask]
                xr = xb[w >> shift]
                for j in range(row.shape[0]):
                    row[j] += v * xr[j]

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _spmv_parallel(ptr, words, codebook, n_blocks, code_bits, col_bits, x, out):  # type: ignore[no-untyped-def]
        mask = np.uint32((1 << code_bits) - 1)
        shift = np.uint32(code_bits)
        for r in numba.prange(out.shape[0]):
            out[r] = _row_dot(ptr, words, codebook, n_blocks, shift, mask, col_bits, x, r)

    @numba.njit(cache=True, nogil=True)
    def _spmv_serial(ptr, words, codebook, n_blocks, code_bits, col_bits, x, out):  # type: ignore[no-untyped-def]
        mask = np.uint32((1 << code_bits) - 1)
        shift = np.uint32(code_bits)
        for r in range(out.shape[0]):
            out[r] = _row_dot(ptr, words, codebook, n_blocks, shift, mask, col_bits, x, r)

    @numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def _spmm_parallel(ptr, words, codebook, n_blocks, code_bits, col_bits, x, out):  # type: ignore[no-untyped-def]
        mask = np.uint32((1 << code_bits) - 1)
        shift = np.uint32(code_bits)
        for r in numba.prange(out.shape[0]):
            _row_times(ptr, words, codebook, n_blocks, shift, mask, col_bits, x, out[r], r)

    @numba.njit(fastmath=True, cache=True, nogil=True)
    def _spmm_serial(ptr, words, codebook, n_blocks, code_bits, col_bits, x, out):  # type: ignore[no-untyped-def]
        mask = np.uint32((1 << code_bits) - 1)
        shift = np.uint32(code_bits)
        for r in range(out.shape[0]):
            _row_times(ptr, words, codebook, n_blocks, shift, mask, col_bits, x, out[r], r)


def spmv(ptr, words, codebook, n_blocks, code_bits, col_bits, x, out) -> None:  # type: ignore[no-untyped-def]
    """``out[r] = sum codebook[code] * x[col]`` over row ``r``'s words (batch 1; ``x`` is ``(cols,)``)."""
    kernel = _spmv_parallel if words.size >= PARALLEL_MIN_WORK else _spmv_serial
    kernel(ptr, words, codebook, n_blocks, code_bits, col_bits, x, out)


def spmm(ptr, words, codebook, n_blocks, code_bits, col_bits, x, out) -> None:  # type: ignore[no-untyped-def]
    """``out[r, :] = sum codebook[code] * x[col, :]`` for C-contiguous ``x (cols, batch)``, ``out (rows, batch)``."""
    kernel = _spmm_parallel if words.size * out.shape[1] >= PARALLEL_MIN_WORK else _spmm_serial
    kernel(ptr, words, codebook, n_blocks, code_bits, col_bits, x, out)


def num_threads() -> int:
    """Threads the compiled kernels use (1 without numba)."""
    return int(numba.get_num_threads()) if numba is not None else 1
