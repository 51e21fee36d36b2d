"""Choosing an entropy coder per stream (paper section 4, and a closer-to-entropy alternative).

Each stream (a layer's relative-index symbols, or its weight codes) is coded on its own. With
``Coder.AUTO`` the ``raw`` fixed-width packing, canonical Huffman and rANS are all sized and the
smallest blob (table included) is kept; ties go to raw, then Huffman (the faster decoders). Tiny
streams usually go raw (no table), peaked large ones rANS. The file header records each choice.
"""

from __future__ import annotations


import numpy as np

from deepcompress.coding import huffman, rans, raw
from deepcompress.choices import Choice
from deepcompress.errors import ConfigError

MAX_SYMBOL = 2**16 - 1


class Coder(Choice):
    """Entropy coder of one stream."""

    AUTO = "auto"
    RAW = "raw"
    HUFFMAN = "huffman"
    RANS = "rans"



_ENCODERS = {Coder.RAW: raw.encode, Coder.HUFFMAN: huffman.encode, Coder.RANS: rans.encode}
_DECODERS = {Coder.RAW: raw.decode, Coder.HUFFMAN: huffman.decode, Coder.RANS: rans.decode}


def _check_symbols(symbols: np.ndarray) -> np.ndarray:
    sym = np.asarray(symbols)
    if sym.ndim != 1 or (sym.size and not np.issubdtype(sym.dtype, np.integer)):
        raise ValueError(f"expected a 1-D integer symbol array, got dtype {sym.dtype} shape {sym.shape}")
    if sym.size and (int(sym.min()) < 0 or int(sym.max()) > MAX_SYMBOL):
        raise ValueError(f"expected symbols in 0..{MAX_SYMBOL}, got {int(sym.min())}..{int(sym.max())}")
    return sym.astype(np.int64)


def _sizes(sym: np.ndarray, choice: Coder) -> dict[Coder, int]:
    """Exact blob size of each candidate coder (raw and Huffman computed without packing)."""
    sizers = {Coder.RAW: raw.encoded_size, Coder.HUFFMAN: huffman.encoded_size, Coder.RANS: lambda s: len(rans.encode(s))}
    return {c: f(sym) for c, f in sizers.items() if choice in (Coder.AUTO, c)}


def encode_stream(symbols: np.ndarray, coder: "str | Coder" = Coder.AUTO) -> tuple[Coder, bytes]:
    """Code ``symbols``; return the coder actually used (never AUTO) and its self-describing blob."""
    choice = Coder.parse(coder, "coder")
    sym = _check_symbols(symbols)
    if choice is Coder.AUTO:
        sizes = _sizes(sym, choice)
        choice = min(sizes, key=lambda c: sizes[c])  # dict order breaks ties: raw, Huffman, rANS
    return choice, _ENCODERS[choice](sym)


def decode_stream(coder: "str | Coder", blob: bytes | memoryview, count: int) -> np.ndarray:
    """Decode ``count`` symbols (int32) coded by ``coder``; ``ValueError`` if the blob is malformed."""
    choice = Coder.parse(coder, "coder")
    if choice is Coder.AUTO:
        raise ConfigError("expected the coder a stream was written with ('raw', 'huffman' or 'rans'), got 'auto'")
    return _DECODERS[choice](blob, count)


def coded_size(symbols: np.ndarray, coder: "str | Coder" = Coder.AUTO) -> int:
    """Byte size of ``encode_stream(symbols, coder)``'s blob."""
    return min(_sizes(_check_symbols(symbols), Coder.parse(coder, "coder")).values())
