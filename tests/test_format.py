"""The .dcz file: round trips, golden bytes, inspect totals, every FormatError case, mutation fuzz."""

from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepcompress.compressed import CompressedLayer, CompressedModel
from deepcompress.errors import FormatError
from deepcompress.format import from_bytes, inspect_bytes, inspect_file, load_compressed, save, to_bytes
from deepcompress.format import spec
from deepcompress.report import format_table

GOLDEN = Path(__file__).parent / "golden" / "tiny.dcz"
FORMAT_DOC = Path(__file__).parents[1] / "docs" / "FORMAT.md"


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
    )
    conv = CompressedLayer(
        name="c",
        kind="conv2d",
        shape=(1, 1, 2, 2),
        codebook=np.array([2.0], dtype=np.float32),
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
        assert (x.kind, x.shape, x.weight_bits, x.index_bits, x.attrs) == (y.kind, y.shape, y.weight_bits, y.index_bits, y.attrs)
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
        codes = rng.integers(0, k, positions.size)
        bias = np.array(draw(st.lists(floats, min_size=shape[0], max_size=shape[0])), dtype=np.float32) if draw(st.booleans()) else None
        layers.append(
            CompressedLayer(f"l{i}", "conv2d" if len(shape) == 4 else "linear", shape, codebook, positions, codes, bias, wbits, draw(st.integers(1, 16)))
        )
    extras = {f"e{j}": np.arange(j + 1, dtype=np.float32).reshape(-1, 1) for j in range(draw(st.integers(0, 2)))}
    return CompressedModel(draw(st.sampled_from(["m", "ü-net"])), layers, extras, {"note": draw(st.text(max_size=5))})


@settings(max_examples=80, deadline=None)
@given(models(), st.sampled_from(["auto", "huffman", "rans"]))
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
    assert fc1["index_bits_pqh"] == 8 * 8 / 3 and fc1["rate_pqh_pct"] == 100 * (12 + 8 + 8) / 32
    table = format_table(report)
    assert table.splitlines()[0].split()[:2] == ["layer", "#weights"] and "fc1" in table and "total" in table
    assert [p.name for p in tmp_path.iterdir()] == ["m.dcz"]  # no temporary file left behind


def test_exact_error_messages() -> None:
    data = GOLDEN.read_bytes()
    with pytest.raises(FormatError) as err:
        from_bytes(b"PK\x03\x04" + data[4:])
    assert str(err.value) == "expected magic b'DCZ\\x00', got b'PK\\x03\\x04'; not a deepcompress file (section 'preamble', byte offset 0)"
    with pytest.raises(FormatError) as err:
        from_bytes(data[:4] + struct.pack("<H", 9) + data[6:])
    assert str(err.value) == "unsupported format version 9; this reader reads version 1 (section 'preamble', byte offset 4)"
    with pytest.raises(FormatError) as err:
        from_bytes(data[:10])
    assert str(err.value) == "file is 10 bytes, shorter than the 16-byte preamble (section 'preamble', byte offset 10)"
    with pytest.raises(FormatError) as err:
        from_bytes(data + b"\x00")
    assert (err.value.section, err.value.offset) == ("end", len(data))


def test_truncation_at_every_offset_raises_format_error() -> None:
    data = GOLDEN.read_bytes()
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            from_bytes(data[:cut])


def _sections(data: bytes) -> list[tuple[str, int, int]]:
    header_len = struct.unpack_from("<I", data, 8)[0]
    header = json.loads(data[16 : 16 + header_len])
    out, offset = [("header", 16, header_len)], 16 + header_len
    for s in header["sections"]:
        out.append((s["name"], offset, s["length"]))
        offset += s["length"]
    return out


def test_flipped_bit_in_each_section_fails_its_checksum() -> None:
    data = GOLDEN.read_bytes()
    for name, offset, length in _sections(data):
        for i in range(length):
            for bit in (0, 7):
                bad = bytearray(data)
                bad[offset + i] ^= 1 << bit
                with pytest.raises(FormatError, match="checksum mismatch") as err:
                    from_bytes(bytes(bad))
                assert (err.value.section, err.value.offset) == (name, offset)


def _rechecksum(data: bytearray) -> bytes:
    """Recompute every CRC so that a mutation reaches the decoders instead of the checksum check."""
    header_len = struct.unpack_from("<I", data, 8)[0]
    header = json.loads(bytes(data[16 : 16 + header_len]))
    offset = 16 + header_len
    for s in header["sections"]:
        s["crc32"] = zlib.crc32(bytes(data[offset : offset + s["length"]]))
        offset += s["length"]
    text = json.dumps(header, separators=(",", ":")).encode()
    return spec.PREAMBLE.pack(spec.MAGIC, spec.VERSION, 0, len(text), zlib.crc32(text)) + text + bytes(data[16 + header_len :])


def _real_small_file() -> bytes:
    rng = np.random.default_rng(0)
    layers = []
    for name, shape, keep in (("fc1", (30, 40), 0.1), ("fc2", (10, 30), 0.3)):
        numel = int(np.prod(shape))
        pos = np.sort(rng.choice(numel, int(numel * keep), replace=False))
        codes = np.clip(rng.normal(4, 1.5, pos.size).round(), 0, 7).astype(np.int64)
        layers.append(CompressedLayer(name, "linear", shape, rng.normal(size=8), pos, codes, rng.normal(size=shape[0]), 3, 4))
    return to_bytes(CompressedModel("fuzz", layers, {}, {}))


@pytest.mark.parametrize("coder", ["huffman", "rans"])
def test_seeded_mutation_fuzz_raises_only_format_error(coder: str) -> None:
    base = bytearray(to_bytes(from_bytes(_real_small_file()), coder))
    rng = np.random.default_rng(1 if coder == "huffman" else 2)
    sections = [s for s in _sections(bytes(base)) if s[0] != "header"]
    outcomes = {"ok": 0, "error": 0}
    for case in range(1500):
        data = bytearray(base)
        if case % 3 == 0:  # raw byte mutations anywhere (mostly caught by the checksums)
            for _ in range(rng.integers(1, 4)):
                data[rng.integers(len(data))] = rng.integers(256)
            mutated = bytes(data)
        else:  # mutate inside a payload section and fix the CRCs, to reach the decoders
            _, offset, length = sections[rng.integers(len(sections))]
            for _ in range(rng.integers(1, 3)):
                data[offset + rng.integers(length)] ^= 1 << int(rng.integers(8))
            mutated = _rechecksum(data)
        try:
            from_bytes(mutated)
            outcomes["ok"] += 1
        except FormatError:
            outcomes["error"] += 1
    assert outcomes["error"] > 0


@pytest.mark.parametrize(
    "mutate, section",
    [
        (lambda h: h["layers"][0].update(nnz=10**12), "header"),
        (lambda h: h["layers"][0]["shape"].append(2**40), "header"),
        (lambda h: h["layers"][0]["index"].update(coder="lz"), "header"),
        (lambda h: h["sections"].pop(), "header"),
        (lambda h: h["sections"][0].update(length=5), "layer c codebook"),
        (lambda h: h.pop("model_name"), "header"),
        (lambda h: h["layers"][1].update(has_bias=1), "header"),
    ],
)
def test_inconsistent_headers_raise_format_error(mutate, section: str) -> None:  # type: ignore[no-untyped-def]
    data = GOLDEN.read_bytes()
    header_len = struct.unpack_from("<I", data, 8)[0]
    header = json.loads(data[16 : 16 + header_len])
    mutate(header)
    text = json.dumps(header).encode()
    bad = spec.PREAMBLE.pack(spec.MAGIC, spec.VERSION, 0, len(text), zlib.crc32(text)) + text + data[16 + header_len :]
    with pytest.raises(FormatError) as err:
        from_bytes(bad)
    assert err.value.section == section
