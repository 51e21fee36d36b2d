"""An embedding table served from its compressed form: rows decoded on lookup, never the whole table.

An embedding's rows are natural CSR rows (paper section 2's sparse storage): the table keeps per row
the start of its surviving entries, their columns and their codebook codes, and a lookup decodes only
the rows asked for. A 30,522 x 384 table at 10% density holds ~1.2M entries (~4 bytes each here:
int16 column + uint8/int16 code + the row pointers) instead of 47 MB of fp32.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from deepcompress.compressed import CompressedLayer


def _narrow(values: np.ndarray, limit: int) -> torch.Tensor:
    """``values`` (all < ``limit``) in the narrowest of uint8 / int16 / int32 / int64 that holds them."""
    for dtype, top in ((np.uint8, 2**8), (np.int16, 2**15), (np.int32, 2**31)):
        if limit <= top:
            return torch.from_numpy(values.astype(dtype))
    return torch.from_numpy(values.astype(np.int64))


class SparseCodebookEmbedding(nn.Module):
    """An ``nn.Embedding`` replacement (inference only) that decodes looked-up rows from the codebook.

    Buffers: ``row_starts`` (rows + 1, int64), ``columns`` and ``codes`` of the surviving entries in row
    order (narrow integer types), ``codebook`` (float32).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, row_starts: torch.Tensor, columns: torch.Tensor,
                 codes: torch.Tensor, codebook: torch.Tensor, padding_idx: int | None = None) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx
        self.register_buffer("row_starts", row_starts, persistent=False)
        self.register_buffer("columns", columns, persistent=False)
        self.register_buffer("codes", codes, persistent=False)
        self.register_buffer("codebook", codebook, persistent=False)

    @classmethod
    def from_compressed(cls, layer: CompressedLayer, padding_idx: int | None = None) -> "SparseCodebookEmbedding":
        """Build from an ``"embedding"`` layer of shape ``(num_embeddings, embedding_dim)``."""
        if layer.kind != "embedding" or len(layer.shape) != 2:
            raise ValueError(f"layer {layer.name!r}: expected a 2-D 'embedding' layer, got {layer.kind!r} {layer.shape}")
        rows, dim = layer.shape
        row_of = layer.positions // dim
        row_starts = np.searchsorted(row_of, np.arange(rows + 1), side="left").astype(np.int64)
        return cls(
            rows, dim, torch.from_numpy(row_starts), _narrow(layer.positions % dim, dim),
            _narrow(layer.codes, max(1, layer.codebook.size)), torch.from_numpy(layer.codebook.copy()), padding_idx,
        )

    @torch.no_grad()
    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        flat = indices.reshape(-1).long()
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.num_embeddings):
            raise IndexError(f"SparseCodebookEmbedding: expected indices in [0, {self.num_embeddings}), got "
                             f"[{int(flat.min())}, {int(flat.max())}]")
        starts = self.row_starts[flat]
        counts = self.row_starts[flat + 1] - starts
        out = torch.zeros(flat.numel(), self.embedding_dim, dtype=self.codebook.dtype, device=flat.device)
        total = int(counts.sum())
        if total:
            lookup = torch.repeat_interleave(torch.arange(flat.numel(), device=flat.device), counts)
            first = torch.repeat_interleave(starts - (torch.cumsum(counts, 0) - counts), counts)
            entries = torch.arange(total, device=flat.device) + first
            out[lookup, self.columns[entries].long()] = self.codebook[self.codes[entries].long()]
        return out.view(*indices.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, stored={self.columns.numel()}"
