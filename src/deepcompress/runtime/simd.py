"""The optional AVX-512 kernels of ``_simd.c``, loaded with ctypes (paper sections 2-3, Table 8).

``setup.py`` builds ``deepcompress.runtime._simd`` as an optional extension; where the compiler was
missing, the build failed, or the CPU lacks AVX-512 F/BW/VL, :data:`HAVE_SIMD` is ``False`` and the
runtime uses the numba kernels (then torch). The module is never imported: its file is opened with
ctypes, because the kernels take raw pointers and a row range so that numba can call them from its
own ``prange`` threads (numba calls ctypes functions in nopython mode without the GIL).
"""

from __future__ import annotations

import ctypes
import importlib.util

import numpy as np

EXTENSION = "deepcompress.runtime._simd"

_U = ctypes.c_uint64  # pointers travel as integers (``arr.ctypes.data``) so numba can pass them
_I = ctypes.c_int64


def _load() -> ctypes.CDLL | None:
    """The extension's shared library when it is built and this CPU runs it, else ``None``."""
    try:
        spec = importlib.util.find_spec(EXTENSION)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.has_location:
        return None
    try:
        lib = ctypes.CDLL(spec.origin)
    except OSError:
        return None
    lib.dc_simd_supported.argtypes = []
    lib.dc_simd_supported.restype = ctypes.c_int
    if not lib.dc_simd_supported():
        return None
    # (ptr, words, codebook, n_blocks, code_bits, col_bits, x, out, r0, r1)
    lib.dc_spmv.argtypes = [_U, _U, _U, _I, _I, _I, _U, _U, _I, _I]
    lib.dc_spmv.restype = None
    # (ptr, words, codebook, n_blocks, code_bits, col_bits, x, n, out, r0, r1)
    lib.dc_spmm.argtypes = [_U, _U, _U, _I, _I, _I, _U, _I, _U, _I, _I]
    lib.dc_spmm.restype = None
    return lib


LIB = _load()
HAVE_SIMD: bool = LIB is not None


def accepts(ptr: np.ndarray, words: np.ndarray) -> bool:
    """Whether the C kernels take this layout: uint16 words (codebooks of <= 256 entries) and int32
    block pointers (fewer than 2**31 nonzeros). Wider layouts run on the numba kernels."""
    return (
        words.dtype == np.uint16 and ptr.dtype == np.int32
        and words.flags.c_contiguous and ptr.flags.c_contiguous
    )
