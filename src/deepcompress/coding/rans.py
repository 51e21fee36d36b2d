"""Range asymmetric numeral systems (rANS): coding within a fraction of a percent of the entropy.

Huffman (paper section 4) spends a whole number of bits per symbol, which costs most on peaked
streams such as the quantized weight codes. rANS codes each symbol in ``log2(M / freq)`` bits for
frequencies quantised to ``M = 2**P``. Two interleaved states share one word stream, so the decoder
has two independent dependency chains to overlap.

Blob layout (little-endian; an empty stream is the empty blob):

* ``u8 P`` -- probability precision, ``0..MAX_PRECISION``; ``u16 A - 1`` -- alphabet size ``A``
  (largest symbol + 1);
* if ``P == 0`` the stream repeats its one symbol ``A - 1`` and nothing follows; otherwise ``A``
  frequencies of ``P`` bits each (MSB first, zero-padded to a whole byte) summing to exactly
  ``2**P`` (with two or more symbols none reaches ``2**P``), two ``u64`` final encoder states
  (lane 0, lane 1), each in ``[2**31, 2**63)``, then the ``u32`` words in the order the decoder
  reads them.

Decoding symbol ``i`` uses lane ``i % 2``: ``slot = x mod M``, ``s`` = the symbol whose cumulative
range holds ``slot``, ``x = freq[s] * (x >> P) + slot - cum[s]``; if ``x < 2**31`` then
``x = (x << 32) | next word``. Both lanes must end at exactly ``2**31``, with every word consumed.

Hand-written instead of calling ``constriction`` (whose coders are fine) because its bit stream is
not specified for other decoders: this layout decodes with numpy and the standard library alone
(numba, when installed, compiles the same functions).
"""

from __future__ import annotations

import struct

import numpy as np

from deepcompress.jit import maybe_jit
from deepcompress.coding.bitio import empty_stream, pack_bits, packed_size, unpack_bits

MAX_PRECISION = 20
"""Largest ``P``: the decoder's slot table has ``2**P`` entries (2 MiB of uint16 at 20)."""

PRECISION_SLACK = 1e-4
"""Relative size the encoder gives up for a smaller precision (and a cache-resident decode table)."""

RANS_L = 1 << 31
_HEAD = struct.Struct("<BH")


def quantize_frequencies(counts: np.ndarray, precision: int) -> np.ndarray:
    """Frequencies summing to ``2**precision``, proportional to ``counts``, each present symbol >= 1."""
    counts = np.asarray(counts, dtype=np.int64)
    total = 1 << precision
    present = counts > 0
    if present.sum() > total:
        raise ValueError(f"{present.sum()} distinct symbols need precision >= {int(present.sum() - 1).bit_length()}")
    exact = counts * (total / counts.sum())
    freq = np.where(present, np.maximum(np.floor(exact), 1), 0).astype(np.int64)
    diff = total - int(freq.sum())
    if diff > 0:  # largest remainders first
        order = np.argsort(-(exact - freq), kind="stable")
        freq[order[:diff]] += 1
    elif diff < 0:  # take back from the largest frequencies, never below 1
        for s in np.argsort(-freq, kind="stable"):
            take = min(int(freq[s]) - 1, -diff)
            freq[s] -= take
            diff += take
            if diff == 0:
                break
    return freq


def _cost_bytes(counts: np.ndarray, precision: int) -> float:
    """Estimated blob size at ``precision``: coded bits of ``counts`` plus the table and states."""
    freq = quantize_frequencies(counts, precision)
    present = counts > 0
    bits = float((counts[present] * (precision - np.log2(freq[present]))).sum())
    return bits / 8 + _HEAD.size + packed_size(counts.size, precision) + 16


@maybe_jit
def _encode_kernel(symbols, freq, cum, precision, words):  # type: ignore[no-untyped-def]
    """Encode in reverse into ``words`` (emission order); return (state0, state1, words used)."""
    x0 = 1 << 31
    x1 = 1 << 31
    nw = 0
    for i in range(symbols.shape[0] - 1, -1, -1):
        s = symbols[i]
        f = int(freq[s])
        x = x0 if i % 2 == 0 else x1
        x_max = ((1 << 31) >> precision << 32) * f
        if x >= x_max:
            words[nw] = x & 0xFFFFFFFF
            nw += 1
            x >>= 32
        x = ((x // f) << precision) + (x % f) + int(cum[s])
        if i % 2 == 0:
            x0 = x
        else:
            x1 = x
    return x0, x1, nw


@maybe_jit
def _decode_kernel(x0, x1, words, count, slot2sym, freq, cum, precision, out):  # type: ignore[no-untyped-def]
    """Decode ``count`` symbols into ``out``; return words consumed, or -1 if the stream is invalid.

    Lanes alternate: even symbols come from state ``x0``, odd ones from ``x1``.
    """
    mask = (1 << precision) - 1
    low = 1 << 31
    nw = words.shape[0]
    p = 0
    for i in range(0, count - 1, 2):
        s0 = slot2sym[x0 & mask]
        s1 = slot2sym[x1 & mask]
        x0 = freq[s0] * (x0 >> precision) + (x0 & mask) - cum[s0]
        x1 = freq[s1] * (x1 >> precision) + (x1 & mask) - cum[s1]
        out[i] = s0
        out[i + 1] = s1
        if x0 < low:
            if p >= nw:
                return -1
            x0 = (x0 << 32) | words[p]
            p += 1
        if x1 < low:
            if p >= nw:
                return -1
            x1 = (x1 << 32) | words[p]
            p += 1
    if count % 2 == 1:
        s0 = slot2sym[x0 & mask]
        x0 = freq[s0] * (x0 >> precision) + (x0 & mask) - cum[s0]
        out[count - 1] = s0
        if x0 < low:
            if p >= nw:
                return -1
            x0 = (x0 << 32) | words[p]
            p += 1
    if x0 != low or x1 != low:
        return -1
    return p


def encode(symbols: np.ndarray) -> bytes:
    """rANS-code a 1-D stream of integers in ``0..2**16-1``, choosing the precision that codes smallest."""
    symbols = np.asarray(symbols).astype(np.int64)
    if symbols.size == 0:
        return b""
    counts = np.bincount(symbols)
    distinct = int((counts > 0).sum())
    if distinct == 1:
        return _HEAD.pack(0, counts.size - 1)
    low = max(1, (distinct - 1).bit_length())
    if low > MAX_PRECISION:
        raise ValueError(f"expected at most 2**{MAX_PRECISION} distinct symbols, got {distinct}")
    costs = {p: _cost_bytes(counts, p) for p in range(low, MAX_PRECISION + 1)}
    best = min(costs.values())
    # the smallest precision within 0.01% of the best: a smaller slot table decodes faster (cache)
    precision = min(p for p, c in costs.items() if c <= best * (1 + PRECISION_SLACK))
    freq = quantize_frequencies(counts, precision)
    cum = np.concatenate(([0], np.cumsum(freq)[:-1])).astype(np.int64)
    words = np.zeros(symbols.size, dtype=np.uint32)
    x0, x1, nw = _encode_kernel(symbols, freq, cum, precision, words)
    return (
        _HEAD.pack(precision, counts.size - 1)
        + pack_bits(freq, precision)
        + struct.pack("<QQ", x0, x1)
        + words[:nw][::-1].astype("<u4").tobytes()
    )


def decode(blob: bytes | memoryview, count: int, *, accelerate: bool = True) -> np.ndarray:
    """Decode ``count`` symbols (int32) from an :func:`encode` blob; ``ValueError`` if it is malformed.

    ``accelerate=False`` runs the pure-Python decoder even when numba is installed.
    """
    empty = empty_stream(blob, count)
    if empty is not None:
        return empty
    if len(blob) < _HEAD.size:
        raise ValueError(f"expected a {_HEAD.size}-byte rANS table header, got {len(blob)} bytes")
    precision, alphabet_m1 = _HEAD.unpack_from(blob, 0)
    alphabet = alphabet_m1 + 1
    if precision > MAX_PRECISION:
        raise ValueError(f"expected precision <= {MAX_PRECISION}, got {precision}")
    if precision == 0:
        if len(blob) != _HEAD.size:
            raise ValueError(f"a single-symbol stream has no payload, got {len(blob) - _HEAD.size} extra bytes")
        return np.full(count, alphabet - 1, dtype=np.int32)
    end = _HEAD.size + packed_size(alphabet, precision)
    if len(blob) < end:
        raise ValueError(f"frequency table needs {end} bytes, blob has {len(blob)}")
    freq = unpack_bits(memoryview(blob)[_HEAD.size : end], alphabet, precision)
    if int(freq.sum()) != 1 << precision:  # each is below 2**P, so two or more symbols are present
        raise ValueError(f"frequencies sum to {int(freq.sum())}, expected 2**{precision}")
    if (len(blob) - end) < 16 or (len(blob) - end - 16) % 4:
        raise ValueError(f"expected two 8-byte states and whole 4-byte words, got {len(blob) - end} bytes")
    x0, x1 = struct.unpack_from("<QQ", blob, end)
    if not (RANS_L <= x0 < 1 << 63 and RANS_L <= x1 < 1 << 63):
        raise ValueError("rANS state out of range [2**31, 2**63)")
    words = np.frombuffer(blob, dtype="<u4", offset=end + 16).astype(np.int64)
    cum = np.concatenate(([0], np.cumsum(freq)[:-1])).astype(np.int64)
    slot2sym = np.repeat(np.arange(alphabet, dtype=np.uint16), freq)
    out = np.empty(count, dtype=np.int32)
    kernel = _decode_kernel if accelerate else _decode_kernel.py_func
    used = kernel(x0, x1, words, count, slot2sym, freq, cum, precision, out)
    if used != words.size:
        raise ValueError("rANS payload does not decode to the expected symbols (corrupt or truncated)")
    return out
