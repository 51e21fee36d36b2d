"""The in-memory layout the sparse kernels run on: column-blocked CSR with packed 16-bit words.

Paper section 2 stores a pruned layer as CSR with small relative indices, and section 3 replaces each
weight by a few-bit index into a per-layer codebook. At batch 1 an fc layer is memory-bound, so the
fewest bytes per surviving weight wins. Here each nonzero is ONE word: its cluster index in the low
``code_bits`` bits and its column *within a column block* in the remaining bits. With a 5-bit codebook
(the paper's fc setting) a ``uint16`` word leaves 11 bits, so columns are cut into blocks of 2048 and a
row's nonzeros in block ``b`` sit between ``ptr[r * n_blocks + b]`` and ``ptr[r * n_blocks + b + 1]``.
That is 2 bytes per weight (the paper's 5 + 5 bits rounded up to a machine word, but addressable
without a serial decode of relative gaps, so rows can run in parallel), versus 4 bytes per dense weight
or 8 for fp32 CSR. The block's slice of the input (8 KB) stays in L1 while its weights stream past.

Codebooks of up to 8 bits (the paper's conv setting) still fit a ``uint16`` word (blocks of 256 columns);
wider codebooks use ``uint32`` words with ``31 - code_bits`` column bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepcompress.compressed import CompressedLayer


@dataclass(frozen=True)
class PackedCodebookCSR:
    """A compressed layer's weight matrix ``(rows, cols)`` in the kernels' layout.

    Attributes:
        rows: output features (``shape[0]``).
        cols: inputs per output (``prod(shape[1:])``; ``in * kh * kw`` for a conv kernel).
        code_bits: bits of the cluster index in each word.
        col_bits: bits of the in-block column in each word; blocks are ``2**col_bits`` columns wide.
        n_blocks: number of column blocks.
        ptr: ``rows * n_blocks + 1`` offsets into ``words`` (int32 while they fit, else int64).
        words: one ``(col_in_block << code_bits) | code`` per nonzero, row-major, columns ascending.
        codebook: float32 centroids, zero-padded to ``2**code_bits`` so a masked code never reads past it.
    """

    rows: int
    cols: int
    code_bits: int
    col_bits: int
    n_blocks: int
    ptr: np.ndarray
    words: np.ndarray
    codebook: np.ndarray

    @property
    def nnz(self) -> int:
        """Number of stored weights."""
        return int(self.words.size)

    @property
    def nbytes(self) -> int:
        """Bytes the kernel reads for the weights: words, block pointers and the codebook."""
        return int(self.words.nbytes + self.ptr.nbytes + self.codebook.nbytes)

    @classmethod
    def from_layer(cls, layer: CompressedLayer) -> "PackedCodebookCSR":
        """Pack ``layer`` (already validated by :class:`CompressedLayer`)."""
        if not isinstance(layer, CompressedLayer):
            raise TypeError(f"expected a CompressedLayer, got {type(layer).__name__}")
        rows = int(layer.shape[0])
        cols = layer.numel // rows if rows else 0
        code_bits = max(1, int(np.ceil(np.log2(max(layer.codebook.size, 2)))))
        # uint32 words keep bit 31 clear so the kernels can widen them to int32 without a sign flip
        word_bits = 16 if code_bits <= 8 else 31
        word_dtype = np.uint16 if word_bits == 16 else np.uint32
        col_bits = word_bits - code_bits
        n_blocks = max(1, -(-cols // (1 << col_bits)))
        row = layer.positions // max(cols, 1)
        col = layer.positions - row * cols
        block = col >> col_bits
        counts = np.bincount(row * n_blocks + block, minlength=rows * n_blocks)
        ptr_dtype = np.int32 if layer.nnz < 2**31 else np.int64
        ptr = np.zeros(rows * n_blocks + 1, dtype=ptr_dtype)
        np.cumsum(counts, out=ptr[1:])
        in_block = (col & ((1 << col_bits) - 1)).astype(word_dtype)
        words = (in_block << word_dtype(code_bits)) | layer.codes.astype(word_dtype)
        codebook = np.zeros(1 << code_bits, dtype=np.float32)
        codebook[: layer.codebook.size] = layer.codebook
        return cls(rows, cols, code_bits, col_bits, n_blocks, ptr, np.ascontiguousarray(words), codebook)

    def coo(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(row, col, code)`` of every stored weight (int64 arrays, row-major order)."""
        code_mask = (1 << self.code_bits) - 1
        words = self.words.astype(np.int64)
        slot = np.repeat(np.arange(self.rows * self.n_blocks, dtype=np.int64), np.diff(self.ptr))
        row, block = np.divmod(slot, self.n_blocks)
        return row, (block << self.col_bits) + (words >> self.code_bits), words & code_mask

    def csr_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Plain CSR ``(crow_indices, col_indices, values)`` with codebook-expanded fp32 values.

        Used by the torch fallback and as the "pruned fp32 CSR" baseline; this is 8 bytes per weight.
        """
        code_mask = (1 << self.code_bits) - 1
        words = self.words.astype(np.int64)
        block = np.repeat(np.tile(np.arange(self.n_blocks, dtype=np.int64), self.rows), np.diff(self.ptr))
        col = (block << self.col_bits) + (words >> self.code_bits)
        values = self.codebook[words & code_mask]
        crow = self.ptr[:: self.n_blocks].astype(np.int64)
        return crow, col, values
