"""Canonical, length-limited Huffman coding of integer symbol streams (paper section 4).

Blob layout (all integers little-endian; an empty stream is the empty blob):

* ``u16 A - 1`` -- alphabet size ``A``, one more than the largest symbol present;
* ``u8 L`` -- bits per code length, 1..5 (the bit length of the longest code's length);
* ``A`` code lengths of ``L`` bits each, MSB first, zero-padded to a whole byte: the length of each
  symbol ``0..A-1`` (0 = symbol absent), at most :data:`MAX_CODE_LEN`;
* the code bits, most significant bit first, the last byte padded with zero bits.

The packed table costs ``3 + ceil(A * L / 8)`` bytes: 9 for 16 weight codes of up to 7 bits, where
one byte per length would take 20; that matters for the small streams of small layers.

Codes are canonical (assigned in order of (length, symbol)), so the lengths alone define them. A
stream with one distinct symbol gets a one-bit code, so every symbol costs at least one bit.

Hand-written because no library does the whole job: ``bitarray.util.canonical_huffman`` builds codes
but does not limit their length (10M symbols can need codes of 30+ bits), and its decoder walks a
tree; the table-driven decoder below (numba when installed) decodes several times faster, and its
pure-Python original keeps files readable without compiled extensions.
"""

from __future__ import annotations

import heapq
import struct

import numpy as np

from deepcompress.jit import HAVE_NUMBA, maybe_jit
from deepcompress.coding.bitio import empty_stream, pack_bits, packed_size, unpack_bits

MAX_CODE_LEN = 24
"""Longest code: a 63-bit decode buffer refilled to >= 56 bits always holds a whole code, and
2**24 exceeds the largest alphabet (2**16), so the limit always admits a complete code."""

LUT_BITS = 11
"""Codes up to this length decode with one table look-up; longer ones take the canonical slow path."""

_ENCODE_CHUNK = 1 << 18
_TABLE_HEAD = struct.Struct("<HB")


def code_lengths(counts: np.ndarray, max_len: int = MAX_CODE_LEN) -> np.ndarray:
    """Huffman code length of each symbol from its count (0 for absent symbols), at most ``max_len``.

    Lengths come from the classic two-smallest merge; if any exceeds ``max_len`` those are clipped and
    the Kraft sum is restored by lengthening the rarest codes still below the limit.
    """
    counts = np.asarray(counts, dtype=np.int64)
    lengths = np.zeros(counts.size, dtype=np.int64)
    present = np.flatnonzero(counts)
    if present.size == 0:
        return lengths
    if present.size == 1:
        lengths[present[0]] = 1
        return lengths
    if present.size > 2**max_len:
        raise ValueError(f"expected at most 2**{max_len} distinct symbols, got {present.size}")
    # Heap of (count, tie-breaker, node); leaves are 0..k-1, internal nodes k.. with parent links.
    k = present.size
    parent = np.zeros(2 * k - 1, dtype=np.int64)
    heap = [(int(counts[s]), i, i) for i, s in enumerate(present)]
    heapq.heapify(heap)
    nxt = k
    while len(heap) > 1:
        c1, _, a = heapq.heappop(heap)
        c2, _, b = heapq.heappop(heap)
        parent[a] = parent[b] = nxt
        heapq.heappush(heap, (c1 + c2, nxt, nxt))
        nxt += 1
    depth = np.zeros(2 * k - 1, dtype=np.int64)
    for node in range(2 * k - 3, -1, -1):  # parents have larger ids: fill depths root-down
        depth[node] = depth[parent[node]] + 1
    leaf_len = depth[:k]
    if leaf_len.max() > max_len:
        leaf_len = np.minimum(leaf_len, max_len)
        excess = int((2.0 ** (max_len - leaf_len)).sum()) - 2**max_len
        for i in np.argsort(counts[present], kind="stable"):  # rarest first
            while excess > 0 and leaf_len[i] < max_len:
                leaf_len[i] += 1
                excess -= 2 ** (max_len - leaf_len[i])
            if excess <= 0:
                break
        slack = -excess  # give back unused code space to the most frequent symbols: Kraft sum == 1
        for i in np.argsort(-counts[present], kind="stable"):
            while leaf_len[i] > 1 and 2 ** (max_len - leaf_len[i]) <= slack:
                slack -= 2 ** (max_len - leaf_len[i])
                leaf_len[i] -= 1
    lengths[present] = leaf_len
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code values (int64) for the given lengths; absent symbols get 0."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(lengths.size, dtype=np.int64)
    order = np.lexsort((np.arange(lengths.size), lengths))
    order = order[lengths[order] > 0]
    code = 0
    prev_len = 0
    for sym in order:
        ln = int(lengths[sym])
        code <<= ln - prev_len
        codes[sym] = code
        code += 1
        prev_len = ln
    return codes


def _check_kraft(lengths: np.ndarray) -> None:
    present = lengths[lengths > 0]
    if present.size == 0:
        raise ValueError("code table has no symbol")
    if present.max() > MAX_CODE_LEN:
        raise ValueError(f"expected code lengths <= {MAX_CODE_LEN}, got {present.max()}")
    kraft = int((np.int64(1) << (MAX_CODE_LEN - present)).sum())
    if present.size == 1:
        if present[0] != 1:
            raise ValueError(f"a lone symbol must have a 1-bit code, got {present[0]} bits")
    elif kraft != 1 << MAX_CODE_LEN:
        raise ValueError("code lengths do not form a complete prefix code (Kraft sum != 1)")


@maybe_jit
def _pack_kernel(symbols, lengths, codes, out):  # type: ignore[no-untyped-def]
    """Write the codes of ``symbols`` MSB-first into the zeroed byte array ``out`` (numba path)."""
    acc = 0
    nacc = 0
    pos = 0
    for i in range(symbols.shape[0]):
        s = symbols[i]
        acc = (acc << lengths[s]) | codes[s]
        nacc += lengths[s]
        while nacc >= 8:
            nacc -= 8
            out[pos] = (acc >> nacc) & 255
            pos += 1
        acc &= (1 << nacc) - 1
    if nacc > 0:
        out[pos] = (acc << (8 - nacc)) & 255


def _pack(symbols: np.ndarray, lengths: np.ndarray, codes: np.ndarray) -> bytes:
    """Concatenate the codes of ``symbols`` MSB-first, zero-padding the last byte.

    Compiled when numba is present; otherwise a chunked numpy bit-matrix (the pure-Python loop
    would take seconds per million symbols).
    """
    if HAVE_NUMBA:
        nbits = int((np.bincount(symbols, minlength=lengths.size) * lengths).sum())
        out = np.zeros((nbits + 7) // 8, dtype=np.uint8)
        _pack_kernel(symbols, lengths, codes, out)
        return out.tobytes()
    max_len = int(lengths.max())
    shifts = np.arange(max_len - 1, -1, -1, dtype=np.int32)
    parts = []
    for start in range(0, symbols.size, _ENCODE_CHUNK):
        sym = symbols[start : start + _ENCODE_CHUNK]
        ln = lengths[sym].astype(np.int32)
        cd = codes[sym].astype(np.int32) << (max_len - ln)  # left-align each code in max_len bits
        bits = ((cd[:, None] >> shifts) & 1).astype(np.uint8)
        parts.append(bits[shifts[None, :] >= max_len - ln[:, None]])
    return np.packbits(np.concatenate(parts)).tobytes()


def encode(symbols: np.ndarray) -> bytes:
    """Huffman-code a 1-D stream of integers in ``0..2**16-1`` into a self-describing blob."""
    symbols = np.asarray(symbols)
    if symbols.size == 0:
        return b""
    counts = np.bincount(symbols.astype(np.int64))
    lengths = code_lengths(counts)
    payload = _pack(symbols.astype(np.int64), lengths, canonical_codes(lengths))
    width = int(lengths.max()).bit_length()
    return _TABLE_HEAD.pack(lengths.size - 1, width) + pack_bits(lengths, width) + payload


def encoded_size(symbols: np.ndarray) -> int:
    """Exact byte size of :func:`encode` ``(symbols)``, computed without packing the bits."""
    symbols = np.asarray(symbols)
    if symbols.size == 0:
        return 0
    counts = np.bincount(symbols.astype(np.int64))
    lengths = code_lengths(counts)
    bits = int((counts * lengths).sum())
    return _TABLE_HEAD.size + packed_size(counts.size, int(lengths.max()).bit_length()) + (bits + 7) // 8


@maybe_jit
def _decode_kernel(data, count, lut_sym, lut_len, lut_bits, first_code, first_index, n_len, sorted_syms, max_len, out):  # type: ignore[no-untyped-def]
    """Table-driven canonical decode into ``out``; returns bits consumed, or -1 on an invalid code.

    Bits past the end of ``data`` read as zeros; the caller compares the consumed count with the
    blob size. The buffer is kept below 2**63 so the same code runs on Python ints and int64.
    """
    mask63 = (1 << 63) - 1
    lut_mask = (1 << lut_bits) - 1
    buf = 0
    nbits = 0
    pos = 0
    ndata = data.shape[0]
    i = 0
    while i < count:
        while nbits <= 55:  # refill to 56..63 bits, then decode while a whole code is buffered
            byte = 0
            if pos < ndata:
                byte = int(data[pos])
            pos += 1
            buf = ((buf << 8) | byte) & mask63
            nbits += 8
        while nbits >= max_len and i < count:
            peek = (buf >> (nbits - lut_bits)) & lut_mask
            ln = int(lut_len[peek])
            if ln > 0:
                out[i] = lut_sym[peek]
                nbits -= ln
            else:
                ln = lut_bits + 1
                found = False
                while ln <= max_len:
                    code = (buf >> (nbits - ln)) & ((1 << ln) - 1)
                    rel = code - int(first_code[ln])
                    if rel >= 0 and rel < int(n_len[ln]):
                        out[i] = sorted_syms[int(first_index[ln]) + rel]
                        nbits -= ln
                        found = True
                        break
                    ln += 1
                if not found:
                    return -1
            i += 1
    return pos * 8 - nbits


def _tables(lengths: np.ndarray) -> tuple:
    """Decode tables: a direct look-up for short codes plus canonical ranges per length."""
    max_len = int(lengths.max())
    lut_bits = min(max_len, LUT_BITS)
    codes = canonical_codes(lengths)
    lut_sym = np.zeros(1 << lut_bits, dtype=np.int32)
    lut_len = np.zeros(1 << lut_bits, dtype=np.int32)
    order = np.lexsort((np.arange(lengths.size), lengths))
    order = order[lengths[order] > 0]
    for sym in order:
        ln = int(lengths[sym])
        if ln > lut_bits:
            break
        lo = int(codes[sym]) << (lut_bits - ln)
        hi = lo + (1 << (lut_bits - ln))
        lut_sym[lo:hi] = sym
        lut_len[lo:hi] = ln
    first_code = np.zeros(MAX_CODE_LEN + 2, dtype=np.int64)
    first_index = np.zeros(MAX_CODE_LEN + 2, dtype=np.int64)
    n_len = np.bincount(lengths[lengths > 0], minlength=MAX_CODE_LEN + 2).astype(np.int64)
    sorted_len = lengths[order]
    for ln in range(1, max_len + 1):
        idx = int(np.searchsorted(sorted_len, ln))
        first_index[ln] = idx
        if idx < order.size:
            first_code[ln] = codes[order[idx]]
    return lut_sym, lut_len, lut_bits, first_code, first_index, n_len, order.astype(np.int32), max_len


def decode(blob: bytes | memoryview, count: int, *, accelerate: bool = True) -> np.ndarray:
    """Decode ``count`` symbols (int32) from an :func:`encode` blob; ``ValueError`` if it is malformed.

    ``accelerate=False`` runs the pure-Python decoder even when numba is installed.
    """
    empty = empty_stream(blob, count)
    if empty is not None:
        return empty
    if len(blob) < _TABLE_HEAD.size:
        raise ValueError(f"expected a {_TABLE_HEAD.size}-byte code table header, got {len(blob)} bytes")
    alphabet_m1, width = _TABLE_HEAD.unpack_from(blob, 0)
    alphabet = alphabet_m1 + 1
    if not 1 <= width <= MAX_CODE_LEN.bit_length():
        raise ValueError(f"expected 1..{MAX_CODE_LEN.bit_length()} bits per code length, got {width}")
    start = _TABLE_HEAD.size + packed_size(alphabet, width)
    if len(blob) < start:
        raise ValueError(f"code table of {alphabet} symbols needs {start} bytes, the blob has {len(blob)}")
    lengths = unpack_bits(memoryview(blob)[_TABLE_HEAD.size : start], alphabet, width)
    _check_kraft(lengths)
    data = np.frombuffer(blob, dtype=np.uint8, offset=start)
    if data.size * 8 < count:
        raise ValueError(f"{data.size} payload bytes cannot hold {count} symbols of at least one bit")
    out = np.empty(count, dtype=np.int32)
    kernel = _decode_kernel if accelerate else _decode_kernel.py_func
    used = kernel(data, count, *_tables(lengths), out)
    if used < 0:
        raise ValueError("invalid Huffman code in the payload")
    if (used + 7) // 8 != data.size:
        raise ValueError(f"payload holds {data.size} bytes but the {count} symbols use {(used + 7) // 8}")
    return out
