"""Inference straight from the compressed form: packed codebook CSR layers and model loading."""

from deepcompress.runtime.kernels import HAVE_NUMBA
from deepcompress.runtime.layers import SparseCodebookConv2d, SparseCodebookLinear
from deepcompress.runtime.model import ConvMode, to_sparse_module
from deepcompress.runtime.packed import PackedCodebookCSR

__all__ = [
    "ConvMode",
    "HAVE_NUMBA",
    "PackedCodebookCSR",
    "SparseCodebookConv2d",
    "SparseCodebookLinear",
    "to_sparse_module",
]
