"""The .dcz file: round trips, golden bytes, inspect totals, every FormatError case, mutation fuzz."""

from __future__ import annotations

import importlib.util
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepcompress.compressed import CompressedLayer, CompressedModel
from deepcompress.errors import FormatError
from deepcompress.format import from_bytes, inspect_bytes, inspect_file, load_compressed, save, to_bytes
from deepcompress.format import spec
from deepcompress.format.reader import parse_layout
from deepcompress.format.writer import assemble
from deepcompress.report import format_table

GOLDEN = Path(__file__).parent / "golden" / "tiny.dcz"
FORMAT_DOC = Path(__file__).parents[1] / "docs" / "FORMAT.md"
_FUZZ = importlib.util.spec_from_file_location("fuzz_reader", Path(__file__).parents[1] / "tools" / "fuzz_reader.py")
fuzz_reader = importlib.util.module_from_spec(_FUZZ)
_FUZZ.loader.exec_module(fuzz_reader)  # type: ignore[union-attr]


def tiny_model() -> CompressedModel:
    """A fixed two-layer model: the golden file and the worked example in docs/FORMAT.md."""
    fc1 = CompressedLayer(
        name="fc1",
        kind="linear",
        shape=(2, 4),
        codebook=np.array([-0.5, 0.25, 1.0], dtype=np.float32),
        positions=np.array([0, 3, 6]),
        codes=np.array([2, 0, 1]),
        bias=np.array([0.5, -1.0], dtype=np.float32),
        weight_bits=2,
        index_bits=2,
        bias_dtype="float16",
    )
    conv = CompressedLayer(
        name="c",
        kind="conv2d",
        shape=(1, 1, 2, 2),
        codebook=np.array([2.1], dtype=np.float32),
        positions=np.array([1]),
        codes=np.array([0]),
        bias=None,
        weight_bits=1,
        index_bits=1,
        attrs={"stride": 1},
    )
    return CompressedModel("tiny", [conv, fc1], extras={"s": np.array([3.0], dtype=np.float32)}, metadata={})


def assert_same(a: CompressedModel, b: CompressedModel) -> None:
    assert a.model_name == b.model_name and a.metadata == b.metadata
    assert [l.name for l in a.layers] == [l.name for l in b.layers]
    for x, y in zip(a.layers, b.layers):
        assert (x.kind, x.shape, x.weight_bits, x.index_bits, x.attrs, x.bias_dtype) == (y.kind, y.shape, y.weight_bits, y.index_bits, y.attrs, y.bias_dtype)
        assert x.codebook.tobytes() == y.codebook.tobytes()
        assert np.array_equal(x.positions, y.positions) and np.array_equal(x.codes, y.codes)
        assert (x.bias is None) == (y.bias is None)
        if x.bias is not None:
            assert x.bias.tobytes() == y.bias.tobytes()
    assert list(a.extras) == list(b.extras)
    for k in a.extras:
        assert np.asarray(a.extras[k], np.float32).tobytes() == b.extras[k].tobytes()


@st.composite
def models(draw: st.DrawFn) -> CompressedModel:
    layers = []
    for i in range(draw(st.integers(0, 3))):
        shape = tuple(draw(st.lists(st.integers(1, 12), min_size=1, max_size=4)))
        numel = int(np.prod(shape))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        positions = np.flatnonzero(rng.random(numel) < draw(st.sampled_from([0.0, 0.05, 0.5, 1.0])))
        wbits = draw(st.integers(1, 8))
        k = draw(st.integers(1, 2**wbits))
        floats = st.floats(width=32, allow_nan=True, allow_infinity=True)
        codebook = np.array(draw(st.lists(floats, min_size=k, max_size=k)), dtype=np.float32)
        half = draw(st.booleans())  # float16-exact codebook and bias: stored in 2 bytes each
        if half:
            with np.errstate(over="ignore", invalid="ignore"):
                codebook = codebook.astype(np.float16).astype(np.float32)
        codes = rng.integers(0, k, positions.size)
        bias = np.array(draw(st.lists(floats, min_size=shape[0], max_size=shape[0])), dtype=np.float32) if draw(st.booleans()) else None
        if bias is not None and half:
            with np.errstate(over="ignore", invalid="ignore"):
                bias = bias.astype(np.float16).astype(np.float32)
        attrs = {"stride": [1, 2]} if draw(st.booleans()) else {}
        layers.append(
            CompressedLayer(f"l{i}", "conv2d" if len(shape) == 4 else "linear", shape, codebook, positions, codes, bias, wbits, draw(st.integers(1, 16)), attrs, "float16" if half and bias is not None else "float32")
        )
    extras = {f"e{j}": np.arange(j + 1, dtype=np.float32).reshape(-1, 1) for j in range(draw(st.integers(0, 2)))}
    return CompressedModel(draw(st.sampled_from(["m", "ü-net"])), layers, extras, {"note": draw(st.text(max_size=5))})


@settings(max_examples=80, deadline=None)
@given(models(), st.sampled_from(["auto", "raw", "huffman", "rans"]))
def test_whole_file_round_trip_is_bit_exact(cm: CompressedModel, coder: str) -> None:
    data = to_bytes(cm, coder)
    assert_same(cm, from_bytes(data))
    report = inspect_bytes(data)
    assert sum(l["bytes"] for l in report["layers"]) + report["header_bytes"] + report["extras_bytes"] == len(data)
    assert report["dense_bytes"] == cm.dense_bytes


def test_golden_file_is_unchanged() -> None:
    # Regenerate deliberately only when the format changes: GOLDEN.write_bytes(to_bytes(tiny_model()))
    assert to_bytes(tiny_model()) == GOLDEN.read_bytes()
    assert_same(tiny_model(), from_bytes(GOLDEN.read_bytes()))


def test_format_doc_hex_example_matches_the_writer() -> None:
    text = FORMAT_DOC.read_text()
    block = text.split("<!-- hexdump:tiny.dcz -->")[1].split("```")[1]
    hex_bytes = "".join(m.group(1).replace(" ", "") for m in re.finditer(r"^[0-9a-f]{8}: ((?:[0-9a-f]{2,4} ?)+)", block, re.M))
    assert bytes.fromhex(hex_bytes) == GOLDEN.read_bytes()


def test_save_load_and_inspect_file(tmp_path: Path) -> None:
    path = tmp_path / "m.dcz"
    size = save(tiny_model(), path)
    assert_same(tiny_model(), load_compressed(path))
    report = inspect_file(path)
    assert report["file_bytes"] == size == path.stat().st_size
    assert sum(l["bytes"] for l in report["layers"]) + report["header_bytes"] + report["extras_bytes"] == size
    assert report["ratio"] == tiny_model().dense_bytes / size
    conv, fc1 = report["layers"]
    assert (conv["weights"], conv["kept_pct"], conv["fillers"]) == (4, 25.0, 1)  # gap 1 at M=1: one filler
    assert (fc1["weights"], fc1["kept_pct"], fc1["fillers"]) == (8, 37.5, 0)  # gaps 0, 2, 2 at M=3
    # fc1: codebook 3 x float16 (exact), bias 2 x float16, index and codes 2 raw bytes each, CRC-32
    assert fc1["section_bytes"] == {"codebook": 6, "bias": 4, "index": 2, "codes": 2, "crc32": 4}
    assert fc1["index_bits_pqh"] == 8 * 2 / 3 and fc1["rate_pqh_pct"] == 100 * (6 + 2 + 2) / 32
    assert report["dense_bytes"] == 4 * (4 + 8 + 2 + 1)  # biases and extras count as float32
    table = format_table(report)
    assert table.splitlines()[0].split()[:2] == ["layer", "#weights"] and "fc1" in table and "total" in table
    assert [p.name for p in tmp_path.iterdir()] == ["m.dcz"]  # no temporary file left behind


def test_header_is_deflated_and_small() -> None:
    data = GOLDEN.read_bytes()
    magic, version, flags, stored, _ = spec.PREAMBLE.unpack_from(data)
    assert (magic, version, flags) == (spec.MAGIC, 1, spec.FLAG_DEFLATED)
    layout = parse_layout(data)
    assert layout.header_bytes == 16 + stored
    text = zlib.decompressobj(spec.DEFLATE_WBITS, zdict=spec.HEADER_ZDICT).decompress(data[16 : 16 + stored])
    assert stored < len(text)  # deflate with the preset dictionary pays off even for two layers
    assert text.startswith(b'{"model":"tiny","meta":{},"layers":[{"name":"c","kind":"conv2d"')


def test_plain_json_header_is_read_too() -> None:
    header, units = fuzz_reader._units(GOLDEN.read_bytes())
    text = b'{"model":"tiny","meta":{},"layers":[]}'
    head = spec.PREAMBLE.pack(spec.MAGIC, 1, 0, len(text), 0)[:12]
    data = head + struct.pack("<I", zlib.crc32(text, zlib.crc32(head))) + text
    assert from_bytes(data).layers == []


def test_float16_bias_must_be_exact() -> None:
    with pytest.raises(ValueError, match=r"layer 'fc1': bias_dtype 'float16' needs a bias exactly representable in float16, but 1 values are not"):
        CompressedLayer("fc1", "linear", (2, 2), [1.0], [0], [0], np.array([0.5, 0.1], np.float32), 1, 1, bias_dtype="float16")
    with pytest.raises(ValueError, match=r"expected bias_dtype in \('float32', 'float16', 'codebook'\), got 'bf16'"):
        CompressedLayer("fc1", "linear", (2, 2), [1.0], [0], [0], None, 1, 1, bias_dtype="bf16")


def _rebuild(data: bytes, header_text: bytes, flags: int = spec.FLAG_DEFLATED, stored: bytes | None = None) -> bytes:
    """``data`` with its header replaced (deflated unless ``stored`` is given) and the CRC fixed."""
    old = parse_layout(data).header_bytes
    if stored is None:
        packer = zlib.compressobj(9, zlib.DEFLATED, spec.DEFLATE_WBITS, zdict=spec.HEADER_ZDICT)
        stored = packer.compress(header_text) + packer.flush()
    head = spec.PREAMBLE.pack(spec.MAGIC, 1, flags, len(stored), 0)[:12]
    return head + struct.pack("<I", zlib.crc32(stored, zlib.crc32(head))) + stored + data[old:]


def test_exact_error_messages() -> None:
    data = GOLDEN.read_bytes()
    cases = [
        (b"PK\x03\x04" + data[4:], "expected magic b'DCZ\\x00', got b'PK\\x03\\x04'; not a deepcompress file (section 'preamble', byte offset 0)"),
        (data[:4] + struct.pack("<H", 9) + data[6:], "unsupported format version 9; this reader reads versions [1, 2] (section 'preamble', byte offset 4)"),
        (data[:10], "file is 10 bytes, shorter than the 16-byte preamble (section 'preamble', byte offset 10)"),
        (data[:6] + struct.pack("<H", 3) + data[8:], "unknown flags 0x0003; this reader knows only bit 0 (deflated header) (section 'preamble', byte offset 6)"),
        (data[:8] + struct.pack("<I", 2**32 - 1) + data[12:], f"header length {2**32 - 1} exceeds the limit {spec.MAX_HEADER_BYTES} (section 'preamble', byte offset 8)"),
        (data + b"\x00", f"1 unexpected trailing bytes after the last section (section 'end', byte offset {len(data)})"),
    ]
    for bad, message in cases:
        with pytest.raises(FormatError) as err:
            from_bytes(bad)
        assert str(err.value) == message


def test_deflate_bomb_is_stopped_at_the_limit() -> None:
    data = GOLDEN.read_bytes()
    bomb = b"[" + b" " * (spec.MAX_HEADER_BYTES + 10) + b"]"  # 4 MiB of JSON whitespace deflates to ~4 KiB
    bad = _rebuild(data, bomb)
    assert len(bad) < 10_000
    with pytest.raises(FormatError, match=f"header inflates past the limit of {spec.MAX_HEADER_BYTES} bytes") as err:
        from_bytes(bad)
    assert (err.value.section, err.value.offset) == ("header", 16)


def test_bad_deflate_streams_are_rejected() -> None:
    data = GOLDEN.read_bytes()
    text = b'{"model":"tiny","meta":{},"layers":[]}'
    packer = zlib.compressobj(9, zlib.DEFLATED, spec.DEFLATE_WBITS, zdict=spec.HEADER_ZDICT)
    good = packer.compress(text) + packer.flush()
    for stored, message in (
        (good[:-2], "incomplete or followed by stray bytes"),
        (good + b"\x00", "incomplete or followed by stray bytes"),
        (b"\xff" * 8, "not a valid deflate stream"),
        (text, "not a valid deflate stream|incomplete"),  # plain JSON with the deflate flag set
    ):
        with pytest.raises(FormatError, match=message):
            from_bytes(_rebuild(data, b"", stored=stored))
    with pytest.raises(FormatError, match="not valid ASCII JSON"):
        from_bytes(_rebuild(data, b'{"model":NaN}'))


def test_truncation_at_every_offset_raises_format_error() -> None:
    data = GOLDEN.read_bytes()
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            from_bytes(data[:cut])


def _units_by_offset(data: bytes) -> list[tuple[str, int, int]]:
    """(section name reported for a corrupt byte, its offset, start, end) of every byte range."""
    layout = parse_layout(data)
    out = [("preamble", 0, 0, 12), ("header", 16, 12, layout.header_bytes)]  # the CRC of the header lives at 12
    start = layout.header_bytes
    for name, sec in layout.sections.items():
        if name.endswith(" crc32"):
            unit = name[: -len(" crc32")]
            out.append((unit, start, start, sec.offset + sec.length))
            start = sec.offset + sec.length
    return out


def test_every_flipped_bit_is_detected_and_located() -> None:
    data = GOLDEN.read_bytes()
    ranges = _units_by_offset(data)
    assert ranges[-1][3] == len(data)
    for name, reported, start, end in ranges:
        for i in range(start, end):
            for bit in range(8):
                bad = bytearray(data)
                bad[i] ^= 1 << bit
                with pytest.raises(FormatError) as err:
                    from_bytes(bytes(bad))
                if name not in ("preamble", "header"):
                    assert (err.value.section, err.value.offset) == (name, reported)
                    assert "checksum mismatch" in str(err.value)
                else:  # a preamble field is rejected by its own check or by the header's CRC-32
                    assert err.value.section in ("preamble", "header")


def test_seeded_mutation_fuzz_raises_only_format_error() -> None:
    result = fuzz_reader.run_seeded(10_000, seed=1, log=None)
    assert result["failure"] is None, result["failure"]
    assert result["cases"] == 10_000 and result["error"] > 0 and result["ok"] > 0


def _golden_parts() -> tuple[dict[str, Any], list[bytes]]:
    return fuzz_reader._units(GOLDEN.read_bytes())


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda h: h["layers"][0].update(nnz=10**12), r"layer 'c': expected 'nnz' in 0..4, got 1000000000000"),
        (lambda h: h["layers"][0]["shape"].append(2**40), "exceed the limit"),
        (lambda h: h["layers"][0]["index"].update(coder="lz"), r"layer 'c' index: expected 'coder' in \('raw', 'huffman', 'rans'\), got 'lz'"),
        (lambda h: h["layers"][0]["codes"].update(bytes=10**9), r"expected 'bytes' in 0\.\."),
        (lambda h: h.pop("model"), "missing"),
        (lambda h: h["layers"][1].update(bias="f8"), r"expected 'bias' in \('f4', 'f2', 'q'\), got 'f8'"),
        (lambda h: h["layers"][1].update(extra=1), r"unknown \['extra'\]"),
        (lambda h: h["layers"].append(dict(h["layers"][0])), "expected unique layer and extra names"),
        (lambda h: h["layers"][0].update(kind="rnn"), "expected 'kind' in"),
        (lambda h: h["layers"][0].update(wbits=True), "expected 'wbits' of type int, got bool"),
    ],
)
def test_inconsistent_headers_raise_format_error(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    header, units = _golden_parts()
    mutate(header)
    with pytest.raises(FormatError, match=message) as err:
        from_bytes(assemble(header, units))
    assert (err.value.section, err.value.offset) == ("header", 16)


def test_stream_errors_name_their_section() -> None:
    header, units = _golden_parts()
    # fc1's unit: codebook 6 B, bias 4 B, index 2 B (raw), codes 2 B (raw); make the index stream
    # point past the layer's 8 weights: width 2, symbols 3 3 3 -> fillers only
    unit = bytearray(units[1])
    unit[10:12] = bytes([2, 0b11111100])
    with pytest.raises(FormatError, match="ends with a filler") as err:
        from_bytes(assemble(header, [units[0], bytes(unit), units[2]]))
    assert err.value.section == "layer fc1 index"
    assert err.value.offset == parse_layout(GOLDEN.read_bytes()).sections["layer fc1 index"].offset
