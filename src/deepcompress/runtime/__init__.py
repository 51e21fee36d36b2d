"""Inference straight from the compressed form: packed codebook CSR layers and model loading."""

from deepcompress.runtime.dispatch import Backend, available_backends
from deepcompress.runtime.embedding import SparseCodebookEmbedding
from deepcompress.runtime.kernels import HAVE_NUMBA, HAVE_SIMD
from deepcompress.runtime.layers import SparseCodebookConv2d, SparseCodebookLinear
from deepcompress.runtime.model import ConvMode, to_sparse_module
from deepcompress.runtime.packed import PackedCodebookCSR

__all__ = [
    "Backend",
    "ConvMode",
    "HAVE_NUMBA",
    "HAVE_SIMD",
    "PackedCodebookCSR",
    "SparseCodebookConv2d",
    "SparseCodebookEmbedding",
    "SparseCodebookLinear",
    "available_backends",
    "to_sparse_module",
]
