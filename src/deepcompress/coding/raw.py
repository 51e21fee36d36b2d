"""The ``raw`` coder: every symbol in ``b`` fixed bits, no table (docs/FORMAT.md).

For a stream of a few hundred symbols a Huffman or rANS table (paper section 4) can cost more than
entropy coding saves; ``Coder.AUTO`` then picks this coder. Blob: ``u8 b`` (0..16, the bit length of
the largest symbol), then the symbols packed MSB first (:mod:`deepcompress.coding.bitio`). ``b = 0``
means every symbol is 0 and nothing follows. An empty stream is the empty blob.
"""

from __future__ import annotations

import numpy as np

from deepcompress.coding.bitio import empty_stream, pack_bits, packed_size, unpack_bits

MAX_WIDTH = 16


def _width(symbols: np.ndarray) -> int:
    return int(symbols.max()).bit_length()


def encoded_size(symbols: np.ndarray) -> int:
    """Exact byte size of :func:`encode` ``(symbols)`` without packing."""
    symbols = np.asarray(symbols)
    return 0 if symbols.size == 0 else 1 + packed_size(symbols.size, _width(symbols))


def encode(symbols: np.ndarray) -> bytes:
    """Pack a 1-D stream of integers in ``0..2**16-1`` at the width of its largest symbol."""
    symbols = np.asarray(symbols, dtype=np.int64)
    if symbols.size == 0:
        return b""
    width = _width(symbols)
    return bytes([width]) + pack_bits(symbols, width)


def decode(blob: bytes | memoryview, count: int, *, accelerate: bool = True) -> np.ndarray:
    """Decode ``count`` symbols (int32); ``ValueError`` if the blob is not exactly their packing.

    ``accelerate`` is accepted for symmetry with the other coders; numpy does all the work here.
    """
    empty = empty_stream(blob, count)
    if empty is not None:
        return empty
    if len(blob) < 1:
        raise ValueError("expected a 1-byte symbol width, got an empty blob")
    width = blob[0]
    if width > MAX_WIDTH:
        raise ValueError(f"expected a symbol width in 0..{MAX_WIDTH}, got {width}")
    return unpack_bits(memoryview(blob)[1:], count, width).astype(np.int32)
