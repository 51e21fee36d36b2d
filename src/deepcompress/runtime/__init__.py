"""From the compressed form to a running module: decoded dense (dense.py) or computed straight from the
compressed form (sparse.py: packed codebook CSR layers, embeddings decoded on lookup)."""

from deepcompress.runtime.dispatch import Backend, available_backends
from deepcompress.runtime.embedding import SparseCodebookEmbedding
from deepcompress.runtime.kernels import HAVE_NUMBA, HAVE_SIMD
from deepcompress.runtime.layers import SparseCodebookConv2d, SparseCodebookLinear
from deepcompress.runtime.dense import build_architecture, to_dense_module
from deepcompress.runtime.sparse import ConvMode, to_sparse_module
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
    "build_architecture",
    "to_dense_module",
    "to_sparse_module",
]
