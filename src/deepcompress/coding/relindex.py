"""Relative sparse indices with filler symbols (paper section 2, Fig. 2).

A layer's surviving weights are stored by their flat row-major positions. Instead of absolute
positions we store the gap to the previous weight in ``b`` bits. With ``M = 2**b - 1``:

* a cursor ``c`` starts at 0;
* a symbol ``s < M`` means "the next weight is at ``c + s``", after which ``c`` = that position + 1;
* the symbol ``M`` is a *filler*: "advance ``c`` by ``M``, no weight here".

A gap ``g = pos - c`` is therefore written as ``g // M`` fillers followed by ``g % M``. The paper
inserts a filler *zero weight* when a gap overflows, which costs an index symbol **and** a weight
code; our filler costs the index symbol only, so it is strictly smaller. All functions here are
vectorised numpy (no Python loop per weight).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from deepcompress.jit import HAVE_NUMBA, maybe_jit
from deepcompress.errors import ConfigError


def _check_bits(index_bits: int) -> int:
    if isinstance(index_bits, bool) or not isinstance(index_bits, (int, np.integer)):
        raise ConfigError(f"expected index_bits as an int in 1..16, got {index_bits!r}")
    if not 1 <= int(index_bits) <= 16:
        raise ConfigError(f"expected index_bits in 1..16, got {index_bits}")
    return int(index_bits)


def _gaps(positions: np.ndarray) -> np.ndarray:
    """Gap of each position to the cursor left by the previous weight."""
    pos = np.asarray(positions, dtype=np.int64)
    if pos.ndim != 1:
        raise ValueError(f"expected 1-D positions, got shape {pos.shape}")
    if pos.size == 0:
        return pos
    cursor = np.empty_like(pos)
    cursor[0] = 0
    cursor[1:] = pos[:-1] + 1
    gaps = pos - cursor
    if gaps.min() < 0:
        raise ValueError("expected non-negative, strictly ascending positions")
    return gaps


def count_fillers(positions: np.ndarray, index_bits: int) -> int:
    """Number of filler symbols the relative index of ``positions`` needs at ``index_bits``."""
    m = 2 ** _check_bits(index_bits) - 1
    return int((_gaps(positions) // m).sum())


def encode_positions(positions: np.ndarray, index_bits: int) -> np.ndarray:
    """Relative-index symbols (uint16, values ``0..2**index_bits - 1``) for ascending ``positions``."""
    m = 2 ** _check_bits(index_bits) - 1
    gaps = _gaps(positions)
    fill = gaps // m
    ends = np.cumsum(fill + 1) - 1  # index of each weight's own symbol, after its fillers
    symbols = np.full(int(ends[-1]) + 1 if ends.size else 0, m, dtype=np.uint16)
    symbols[ends] = (gaps % m).astype(np.uint16)
    return symbols


def decode_positions(symbols: np.ndarray, index_bits: int, numel: int) -> np.ndarray:
    """Inverse of :func:`encode_positions`: int64 flat positions, checked to lie in ``[0, numel)``.

    Raises ``ValueError`` for a symbol above ``2**index_bits - 1``, a trailing filler (never written
    by the encoder) or a position past ``numel``.
    """
    m = 2 ** _check_bits(index_bits) - 1
    sym = np.asarray(symbols)
    if sym.ndim != 1:
        raise ValueError(f"expected 1-D symbols, got shape {sym.shape}")
    if sym.size == 0:
        return np.zeros(0, dtype=np.int64)
    if HAVE_NUMBA:  # one compiled pass instead of five numpy passes (the reader's hot spot)
        out = np.empty(sym.size, dtype=np.int64)
        n = _decode_kernel(sym, m, out)
        if n < 0:
            raise ValueError(f"expected index symbols in 0..{m}, got values in {int(sym.min())}..{int(sym.max())}")
        # a copy when fillers took room, so the layer does not keep a buffer sized for every symbol
        positions = out if n == out.size else out[:n].copy()
        if sym[-1] == m:
            raise ValueError("index stream ends with a filler symbol; expected it to end with a weight")
    else:
        sym = sym.astype(np.int64)
        if sym.min() < 0 or sym.max() > m:
            raise ValueError(f"expected index symbols in 0..{m}, got values in {sym.min()}..{sym.max()}")
        if sym[-1] == m:
            raise ValueError("index stream ends with a filler symbol; expected it to end with a weight")
        is_weight = sym != m
        positions = np.cumsum(np.where(is_weight, sym + 1, m))[is_weight] - 1
    if positions[-1] >= numel:
        raise ValueError(f"index stream points at position {positions[-1]}, past the {numel} weights")
    return positions


@maybe_jit
def _decode_kernel(symbols, m, out):  # type: ignore[no-untyped-def]
    """Positions of the weights in ``symbols`` written to ``out``; their count, or -1 for a bad symbol."""
    cursor = 0
    n = 0
    for i in range(symbols.shape[0]):
        s = int(symbols[i])
        if s < 0 or s > m:
            return -1
        if s == m:
            cursor += m
        else:
            out[n] = cursor + s
            cursor += s + 1
            n += 1
    return n


def best_index_bits(
    positions: np.ndarray,
    numel: int,
    coder: str = "auto",
    candidates: Iterable[int] = range(2, 9),
) -> int:
    """The index width in ``candidates`` whose entropy-coded index stream (with its table) is smallest.

    ``coder`` is a :class:`deepcompress.coding.Coder` value (``"auto"``, ``"huffman"``, ``"rans"``).
    Ties go to the smaller width. ``numel`` is checked against the positions.
    """
    from deepcompress.coding.streams import coded_size  # streams imports nothing from here

    pos = np.asarray(positions, dtype=np.int64)
    if pos.size and pos[-1] >= numel:
        raise ValueError(f"expected positions below numel={numel}, got {pos[-1]}")
    best: tuple[int, int] | None = None
    for bits in candidates:
        size = coded_size(encode_positions(pos, bits), coder)
        if best is None or size < best[0]:
            best = (size, bits)
    if best is None:
        raise ConfigError("expected at least one candidate index width, got none")
    return best[1]
