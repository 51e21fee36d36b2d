"""Biases stored as a codebook of their distinct float16 values (header ``"bias": "q"``, format version 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepcompress.compressed import CompressedLayer, CompressedModel
from deepcompress.errors import FormatError
from deepcompress.format import from_bytes, to_bytes
from deepcompress.format import spec


def layer_with_bias(bias: np.ndarray, dtype: str = "codebook") -> CompressedLayer:
    rows = bias.size
    return CompressedLayer("fc", "linear", (rows, 3), np.array([0.5, -1.0], np.float32), np.array([0, 4]), np.array([0, 1]),
                           bias.astype(np.float32), 1, 2, bias_dtype=dtype)


@pytest.mark.parametrize("distinct", [1, 2, 3, 16, 17, 200, 256])
def test_a_shared_bias_round_trips_in_the_bytes_its_width_needs(distinct: int) -> None:
    rng = np.random.default_rng(distinct)
    values = np.unique(rng.normal(size=4 * distinct).astype(np.float16).astype(np.float32))[:distinct]
    assert values.size == distinct
    bias = values[rng.permutation(np.arange(300) % distinct)]
    data = to_bytes(CompressedModel("m", [layer_with_bias(bias)]))
    layer = from_bytes(data).layers[0]
    assert layer.bias_dtype == "codebook" and np.array_equal(layer.bias.view(np.uint32), bias.view(np.uint32))
    plain = to_bytes(CompressedModel("m", [layer_with_bias(bias, "float16")]))
    assert len(plain) - len(data) >= 2 * 300 - spec.bias_bytes(distinct, 300) - 16  # header differs by a few bytes
    assert spec.bias_bytes(distinct, 300) == 2 * distinct + (300 * spec.bias_code_bits(distinct) + 7) // 8
    assert data[4] == 2 or int.from_bytes(data[4:6], "little") == 2  # version 2


def test_bias_code_widths() -> None:
    assert [spec.bias_code_bits(n) for n in (1, 2, 3, 4, 5, 16, 17, 256)] == [0, 1, 2, 2, 3, 4, 5, 8]


def test_a_codebook_bias_must_be_float16_exact_and_have_at_most_256_values() -> None:
    with pytest.raises(ValueError, match="bias_dtype 'codebook' needs a bias exactly representable in float16"):
        layer_with_bias(np.array([0.1, 0.2], np.float32))
    many = np.arange(300, dtype=np.float32)
    with pytest.raises(ValueError, match="holds at most 256 distinct values, got 300"):
        layer_with_bias(many)


def test_the_reader_refuses_a_bias_index_past_its_values_and_a_stray_bk() -> None:
    from test_format import fuzz_reader

    from deepcompress.format.writer import assemble

    bias = np.array([0.5, -0.5, 0.25, 0.5, 0.5], np.float32)
    header, units = fuzz_reader._units(to_bytes(CompressedModel("m", [layer_with_bias(bias)])))
    assert header["layers"][0]["bias"] == "q" and header["layers"][0]["bk"] == 3
    stray = json.loads(json.dumps(header))
    stray["layers"][0]["bias"] = "f4"
    with pytest.raises(FormatError, match="'bk' belongs to a bias stored as 'q'"):
        from_bytes(assemble(stray, units, version=2))
    unit = bytearray(units[0])
    unit[4 + 6] = 0xFF  # after the float16 codebook (4 bytes) and the three bias values: 2-bit index 3 is past them
    with pytest.raises(FormatError, match="bias index 3 is past its 3 values"):
        from_bytes(assemble(header, [bytes(unit)], version=2))
