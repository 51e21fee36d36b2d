"""Entropy coding of a compressed layer: relative sparse indices and per-stream coders (sections 2, 4)."""

from deepcompress.coding.relindex import best_index_bits, count_fillers, decode_positions, encode_positions
from deepcompress.coding.streams import Coder, coded_size, decode_stream, encode_stream

__all__ = [
    "Coder",
    "best_index_bits",
    "coded_size",
    "count_fillers",
    "decode_positions",
    "decode_stream",
    "encode_positions",
    "encode_stream",
]
