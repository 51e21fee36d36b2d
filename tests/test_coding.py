"""Relative sparse indices and entropy coders: round trips, edge cases, brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepcompress.coding import (
    Coder,
    best_index_bits,
    coded_size,
    count_fillers,
    decode_positions,
    decode_stream,
    encode_positions,
    encode_stream,
)
from deepcompress.coding import bitio, huffman, rans, raw
from deepcompress.errors import ConfigError


def _brute_symbols(positions: list[int], bits: int) -> list[int]:
    m = 2**bits - 1
    out, cursor = [], 0
    for p in positions:
        gap = p - cursor
        while gap >= m:
            out.append(m)
            gap -= m
        out.append(gap)
        cursor = p + 1
    return out


@st.composite
def _positions(draw: st.DrawFn) -> tuple[np.ndarray, int, int]:
    bits = draw(st.integers(1, 16))
    m = 2**bits - 1
    special = st.sampled_from([0, 1, max(m - 1, 0), m, m + 1, 2 * m, 3 * m + 1, 70000])
    gaps = draw(st.lists(st.one_of(special, st.integers(0, 3 * m + 2)), max_size=60))
    positions = np.cumsum(np.asarray(gaps, dtype=np.int64) + 1) - 1
    numel = int(positions[-1] + 1 + draw(st.integers(0, 5))) if positions.size else draw(st.integers(0, 9))
    return positions, bits, numel


@settings(max_examples=300, deadline=None)
@given(_positions())
def test_relindex_round_trip_and_fillers_match_brute_force(case: tuple[np.ndarray, int, int]) -> None:
    positions, bits, numel = case
    symbols = encode_positions(positions, bits)
    expected = _brute_symbols(positions.tolist(), bits)
    assert symbols.tolist() == expected
    assert count_fillers(positions, bits) == sum(s == 2**bits - 1 for s in expected)
    assert np.array_equal(decode_positions(symbols, bits, numel), positions)


@pytest.mark.parametrize("bits", [1, 2, 5, 8, 16])
def test_relindex_all_zero_and_fully_dense_layers(bits: int) -> None:
    empty = np.zeros(0, dtype=np.int64)
    assert encode_positions(empty, bits).size == 0
    assert decode_positions(encode_positions(empty, bits), bits, 100).size == 0
    dense = np.arange(1000)
    symbols = encode_positions(dense, bits)
    assert symbols.tolist() == [0] * 1000
    assert np.array_equal(decode_positions(symbols, bits, 1000), dense)


def test_relindex_gaps_at_the_bound() -> None:
    # b=2, M=3: gap 2 -> [2]; gap 3 -> [3, 0]; gap 4 -> [3, 1]; gap 7 -> [3, 3, 1]
    assert encode_positions(np.array([2]), 2).tolist() == [2]
    assert encode_positions(np.array([3]), 2).tolist() == [3, 0]
    assert encode_positions(np.array([4]), 2).tolist() == [3, 1]
    assert encode_positions(np.array([0, 8]), 2).tolist() == [0, 3, 3, 1]
    assert count_fillers(np.array([0, 8]), 2) == 2


def test_decoded_positions_own_their_memory() -> None:
    # 1,000 weights behind ~99,000 fillers: the result holds 1,000 int64, not a view of a buffer
    # sized for every symbol that the layer would then keep alive (docs/SECURITY.md, decode memory)
    positions = np.arange(0, 100_000, 100)
    symbols = encode_positions(positions, 1)
    decoded = decode_positions(symbols, 1, 100_000)
    assert np.array_equal(decoded, positions) and symbols.size > 90 * positions.size
    assert decoded.base is None and decoded.nbytes == 8 * positions.size


def test_relindex_rejects_bad_input_with_clear_messages() -> None:
    with pytest.raises(ConfigError, match="expected index_bits in 1..16, got 17"):
        encode_positions(np.array([1]), 17)
    with pytest.raises(ConfigError, match="got 0"):
        count_fillers(np.array([1]), 0)
    with pytest.raises(ValueError, match="past the 4 weights"):
        decode_positions(np.array([5]), 3, 4)
    with pytest.raises(ValueError, match="ends with a filler"):
        decode_positions(np.array([0, 7]), 3, 100)
    with pytest.raises(ValueError, match="expected index symbols in 0..7"):
        decode_positions(np.array([8]), 3, 100)


def test_best_index_bits_prefers_wide_for_sparse_and_narrow_for_dense() -> None:
    rng = np.random.default_rng(0)
    numel = 200_000
    sparse = np.sort(rng.choice(numel, 2000, replace=False))
    dense = np.sort(rng.choice(numel, 150_000, replace=False))
    b_sparse = best_index_bits(sparse, numel, "huffman")
    b_dense = best_index_bits(dense, numel, "huffman")
    assert b_sparse > b_dense
    sizes = {b: coded_size(encode_positions(sparse, b), "huffman") for b in range(2, 9)}
    assert sizes[b_sparse] == min(sizes.values())


symbol_streams = st.one_of(
    st.lists(st.integers(0, 2**16 - 1), max_size=300),
    st.lists(st.integers(0, 3), max_size=300),
    st.integers(0, 2**16 - 1).flatmap(lambda s: st.lists(st.just(s), min_size=1, max_size=50)),
)


@settings(max_examples=150, deadline=None)
@given(symbol_streams, st.sampled_from([Coder.RAW, Coder.HUFFMAN, Coder.RANS, Coder.AUTO]))
def test_coder_round_trip(symbols: list[int], coder: Coder) -> None:
    sym = np.asarray(symbols, dtype=np.int64)
    used, blob = encode_stream(sym, coder)
    assert used is not Coder.AUTO
    assert len(blob) == coded_size(sym, coder)
    assert np.array_equal(decode_stream(used, blob, sym.size), sym)
    pure = {Coder.RAW: raw.decode, Coder.HUFFMAN: huffman.decode, Coder.RANS: rans.decode}[used](blob, sym.size, accelerate=False)
    assert np.array_equal(pure, sym)
    if coder is Coder.AUTO:  # auto keeps the smallest blob of the three
        assert len(blob) == min(len(encode_stream(sym, c)[1]) for c in (Coder.RAW, Coder.HUFFMAN, Coder.RANS))


def test_coder_edge_cases() -> None:
    for coder in (Coder.RAW, Coder.HUFFMAN, Coder.RANS):
        assert encode_stream(np.zeros(0, np.int64), coder)[1] == b""
        assert decode_stream(coder, b"", 0).size == 0
    # a lone symbol gets a one-bit Huffman code: A - 1 = 5, 1 bit per length, lengths 000001 -> 0x04,
    # then 9 one-bit codes -> 2 payload bytes
    assert huffman.encode(np.full(9, 5)) == bytes([5, 0, 1, 0b00000100, 0, 0])
    # rANS with one symbol: precision 0 and A - 1 = the symbol, nothing else
    assert rans.encode(np.full(9, 5)) == bytes([0, 5, 0])
    assert rans.decode(bytes([0, 5, 0]), 4).tolist() == [5] * 4
    # raw: width 3 for symbols up to 5; 5, 0, 7 -> 101 000 111 -> 0xA3 0x80
    assert raw.encode(np.array([5, 0, 7])) == bytes([3, 0xA3, 0x80])
    assert raw.encode(np.zeros(1000, np.int64)) == bytes([0])  # all zeros: width 0, no payload
    assert raw.decode(bytes([0]), 1000).tolist() == [0] * 1000
    full = np.arange(2**16)
    for coder in (Coder.RAW, Coder.HUFFMAN, Coder.RANS):
        used, blob = encode_stream(full, coder)
        assert np.array_equal(decode_stream(used, blob, full.size), full)


def test_huffman_lengths_are_limited_and_complete() -> None:
    fib = [1, 1]
    while len(fib) < 40:
        fib.append(fib[-1] + fib[-2])
    lengths = huffman.code_lengths(np.asarray(fib))
    assert lengths.max() == huffman.MAX_CODE_LEN
    assert sum(2.0 ** -lengths) == 1.0
    sym = np.repeat(np.arange(40), np.minimum(fib, 1000))
    assert np.array_equal(huffman.decode(huffman.encode(sym), sym.size), sym)


def test_rans_is_near_entropy_on_a_peaked_stream() -> None:
    rng = np.random.default_rng(1)
    sym = np.clip(np.round(rng.normal(16, 2.5, 200_000)), 0, 31).astype(np.int64)
    p = np.bincount(sym) / sym.size
    p = p[p > 0]
    entropy_bytes = -(p * np.log2(p)).sum() * sym.size / 8
    blob = rans.encode(sym)
    assert len(blob) <= entropy_bytes * 1.005 + 200  # table + states
    assert len(blob) < huffman.encoded_size(sym)


def test_coder_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match=r"coder: expected one of \['auto', 'raw', 'huffman', 'rans'\], got 'lz'"):
        encode_stream(np.array([1]), "lz")
    with pytest.raises(ValueError, match="expected symbols in 0..65535"):
        encode_stream(np.array([70000]))
    with pytest.raises(ValueError, match="invalid Huffman code|payload"):
        huffman.decode(bytes([1, 0, 1, 0b11000000, 0xFF]), 100)
    blob = bytearray(rans.encode(np.arange(100) % 7))
    blob[-1] ^= 0x55
    with pytest.raises(ValueError):
        rans.decode(bytes(blob), 100)


def test_raw_rejects_wrong_sizes_and_nonzero_padding() -> None:
    with pytest.raises(ValueError, match="expected 2 bytes for 3 values of 3 bits, got 1"):
        raw.decode(bytes([3, 0xA3]), 3)
    with pytest.raises(ValueError, match="zero padding"):
        raw.decode(bytes([3, 0xA3, 0x81]), 3)
    with pytest.raises(ValueError, match="symbol width in 0..16, got 17"):
        raw.decode(bytes([17, 0]), 1)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 20).flatmap(lambda w: st.tuples(st.just(w), st.lists(st.integers(0, 2**w - 1), max_size=600))))
def test_bit_packing_round_trip(case: tuple[int, list[int]]) -> None:
    width, values = case
    packed = bitio.pack_bits(np.asarray(values, dtype=np.int64), width)
    assert len(packed) == bitio.packed_size(len(values), width)
    assert bitio.unpack_bits(packed, len(values), width).tolist() == values


def test_small_stream_tables_are_compact() -> None:
    # fc3-like codes: 250 symbols of a 16-letter alphabet
    rng = np.random.default_rng(0)
    sym = np.clip(np.round(rng.normal(8, 3, 250)), 0, 15).astype(np.int64)
    lengths = huffman.code_lengths(np.bincount(sym))
    table = 3 + bitio.packed_size(16, int(lengths.max()).bit_length())
    assert len(huffman.encode(sym)) == table + (int((np.bincount(sym) * lengths).sum()) + 7) // 8
    assert table <= 3 + 10  # one byte per length would be 20 bytes
    assert raw.encoded_size(sym) == 1 + 125  # 4 bits each, no table
    assert coded_size(sym) == min(raw.encoded_size(sym), huffman.encoded_size(sym), len(rans.encode(sym)))
    assert coded_size(np.array([3, 1, 2])) == raw.encoded_size(np.array([3, 1, 2])) == 2  # tiny: raw wins
