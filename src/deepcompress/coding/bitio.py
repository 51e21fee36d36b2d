"""Fixed-width bit packing, most significant bit first (docs/FORMAT.md, "raw" streams and code tables).

Used for the ``raw`` coder (every symbol in ``b`` bits, no table: the cheapest choice for tiny streams
such as a 10-output layer's codes, paper section 4's Huffman table would cost more than it saves) and
for the compact code-length and frequency tables of the Huffman and rANS coders.

numpy's ``packbits``/``unpackbits`` do the bit work; the values are processed in chunks so that
packing a large stream never materialises more than ``_CHUNK * width`` bytes at once.
"""

from __future__ import annotations

import numpy as np

_CHUNK = 1 << 18
"""Values per chunk: a multiple of 8, so every chunk of ``width``-bit values ends on a byte boundary."""


def packed_size(count: int, width: int) -> int:
    """Bytes taken by ``count`` values of ``width`` bits, the last byte zero-padded."""
    return (count * width + 7) // 8


def pack_bits(values: np.ndarray, width: int) -> bytes:
    """Pack non-negative integers below ``2**width`` into ``width`` bits each, MSB first."""
    if not 0 <= width <= 32:
        raise ValueError(f"expected a bit width in 0..32, got {width}")
    values = np.asarray(values, dtype=np.int64)
    if width == 0 or values.size == 0:
        return b""
    if values.min() < 0 or values.max() >= 1 << width:
        raise ValueError(f"expected values in 0..{(1 << width) - 1}, got {values.min()}..{values.max()}")
    shifts = np.arange(width - 1, -1, -1, dtype=np.int64)
    parts = [
        np.packbits(((values[i : i + _CHUNK, None] >> shifts) & 1).astype(np.uint8).reshape(-1)).tobytes()
        for i in range(0, values.size, _CHUNK)
    ]
    return b"".join(parts)


def unpack_bits(data: bytes | memoryview, count: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` int64 values; ``ValueError`` unless ``data`` is exactly
    ``packed_size(count, width)`` bytes with zero padding bits (so every value list has one encoding)."""
    if not 0 <= width <= 32:
        raise ValueError(f"expected a bit width in 0..32, got {width}")
    need = packed_size(count, width)
    if len(data) != need:
        raise ValueError(f"expected {need} bytes for {count} values of {width} bits, got {len(data)}")
    if width == 0 or count == 0:
        return np.zeros(count, dtype=np.int64)
    raw = np.frombuffer(data, dtype=np.uint8)
    pad = need * 8 - count * width
    if pad and int(raw[-1]) & ((1 << pad) - 1):
        raise ValueError("expected zero padding bits after the last value")
    weights = np.int64(1) << np.arange(width - 1, -1, -1, dtype=np.int64)
    out = np.empty(count, dtype=np.int64)
    step = _CHUNK * width // 8  # bytes per chunk of _CHUNK values
    for j, i in enumerate(range(0, count, _CHUNK)):
        n = min(_CHUNK, count - i)
        bits = np.unpackbits(raw[j * step : j * step + packed_size(n, width)], count=n * width)
        out[i : i + n] = bits.reshape(n, width).astype(np.int64) @ weights
    return out


def empty_stream(blob: bytes | memoryview, count: int) -> np.ndarray | None:
    """The decoded empty stream when ``count`` is 0 (every coder writes it as zero bytes), else ``None``."""
    if count != 0:
        return None
    if len(blob):
        raise ValueError(f"expected an empty blob for an empty stream, got {len(blob)} bytes")
    return np.zeros(0, dtype=np.int32)
