"""Compiled kernels that multiply by a :class:`PackedCodebookCSR` matrix without decoding it.

Hand-written with numba because no library kernel reads codebook indices: BLAS and sparse BLAS want
fp32 values (the paper's section 5 notes this too: "BLAS libraries don't support indirect look-up and
relative indexing"). Each inner step loads one packed word, looks the weight up in the (L1-resident)
codebook and multiplies by the input at that column. Rows are split across threads with ``prange``.

numba is optional: :data:`HAVE_NUMBA` is ``False`` without it and the layers in
:mod:`deepcompress.runtime.layers` fall back to torch's sparse CSR product.
"""

from __future__ import annotations

import numpy as np

try:
    import numba
except ImportError:  # the package still works, through the torch fallback
    numba = None

HAVE_NUMBA: bool = numba is not None

if numba is not None:

    @numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def spmv(ptr, words, codebook, n_blocks, code_bits, col_bits, x, out):  # type: ignore[no-untyped-def]
        """``out[r] = sum codebook[code] * x[col]`` over row ``r``'s words (batch 1).

        Four independent accumulators break the add dependency chain (measured 1.5x over one on a
        VGG-16 fc6-sized layer); words are widened to int32 so shifts and masks stay in 32-bit lanes.
        """
        mask = np.int32((1 << code_bits) - 1)
        shift = np.int32(code_bits)
        width = 1 << col_bits
        for r in numba.prange(out.shape[0]):
            acc0 = np.float32(0.0)
            acc1 = np.float32(0.0)
            acc2 = np.float32(0.0)
            acc3 = np.float32(0.0)
            base = r * n_blocks
            for b in range(n_blocks):
                offset = b * width
                k = ptr[base + b]
                end = ptr[base + b + 1]
                while k + 4 <= end:
                    w0 = np.int32(words[k])
                    w1 = np.int32(words[k + 1])
                    w2 = np.int32(words[k + 2])
                    w3 = np.int32(words[k + 3])
                    acc0 += codebook[w0 & mask] * x[offset + (w0 >> shift)]
                    acc1 += codebook[w1 & mask] * x[offset + (w1 >> shift)]
                    acc2 += codebook[w2 & mask] * x[offset + (w2 >> shift)]
                    acc3 += codebook[w3 & mask] * x[offset + (w3 >> shift)]
                    k += 4
                while k < end:
                    w0 = np.int32(words[k])
                    acc0 += codebook[w0 & mask] * x[offset + (w0 >> shift)]
                    k += 1
            out[r] = (acc0 + acc1) + (acc2 + acc3)

    @numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def spmm(ptr, words, codebook, n_blocks, code_bits, col_bits, x, out):  # type: ignore[no-untyped-def]
        """``out[r, :] = sum codebook[code] * x[col, :]``: each decoded weight is reused across the batch.

        ``x`` is ``(cols, batch)`` and ``out`` is ``(rows, batch)``, both C-contiguous, so the inner loop
        runs over contiguous batch entries and vectorises.
        """
        mask = (1 << code_bits) - 1
        width = 1 << col_bits
        batch = out.shape[1]
        for r in numba.prange(out.shape[0]):
            row = out[r]
            row[:] = 0.0
            base = r * n_blocks
            for b in range(n_blocks):
                offset = b * width
                for k in range(ptr[base + b], ptr[base + b + 1]):
                    w = words[k]
                    v = codebook[w & mask]
                    xr = x[offset + (w >> code_bits)]
                    for j in range(batch):
                        row[j] += v * xr[j]


def num_threads() -> int:
    """Threads the compiled kernels use (1 without numba)."""
    return int(numba.get_num_threads()) if numba is not None else 1
