"""Named byte blobs inside a ``.dcz`` file (format version 2's optional ``attachments``): round trips,
the version they need, byte-level splicing into a written file, deflate, inspection and corruption."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepcompress.compressed import CompressedLayer, CompressedModel
from deepcompress.errors import ConfigError, FormatError
from deepcompress.format import from_bytes, inspect_bytes, parse_layout, to_bytes, with_attachments
from deepcompress.format import spec
from deepcompress.format.writer import assemble

TOKENIZER = b'{"model": {"vocab": {"[PAD]": 0, "[UNK]": 1, "the": 2, "of": 3}}}' * 20


def small_model(**fields: object) -> CompressedModel:
    layer = CompressedLayer("fc", "linear", (4, 6), np.array([0.5, -0.25], np.float32), np.array([0, 5, 9, 20]),
                            np.array([0, 1, 1, 0]), np.zeros(4, np.float32), 1, 3)
    return CompressedModel("m", [layer], extras={"ln.weight": np.ones(3, np.float32)}, **fields)


def test_attachments_round_trip_and_need_version_2() -> None:
    plain = to_bytes(small_model())
    assert int.from_bytes(plain[4:6], "little") == 1  # a file without attachments stays version 1
    blobs = {"tokenizer.json": TOKENIZER, "1_Pooling/config.json": b"{}", "empty": b""}
    data = to_bytes(small_model(attachments=blobs))
    assert int.from_bytes(data[4:6], "little") == 2
    back = from_bytes(data)
    assert back.attachments == blobs and list(back.attachments) == list(blobs)
    entries = {e["name"]: e for e in parse_layout(data).header["attachments"]}
    assert entries["tokenizer.json"]["inflated"] == len(TOKENIZER) > entries["tokenizer.json"]["bytes"]  # deflated
    assert "inflated" not in entries["1_Pooling/config.json"]  # kept verbatim: deflate would not shrink it
    np.testing.assert_array_equal(back.layer("fc").dense_weight(), small_model().layer("fc").dense_weight())


def test_with_attachments_splices_without_reencoding() -> None:
    plain = to_bytes(small_model())
    blobs = {"tokenizer.json": TOKENIZER}
    spliced = with_attachments(plain, blobs)
    assert spliced == to_bytes(small_model(attachments=blobs))
    assert with_attachments(spliced, {"other": b"x"}) == to_bytes(small_model(attachments={"other": b"x"}))
    assert with_attachments(spliced, {}) == plain  # removing them gives the original file back, version 1
    with pytest.raises(ValueError, match=r"attachment 'a': expected bytes, got str; encode text first"):
        with_attachments(plain, {"a": "text"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"attachment name: expected a non-empty string, got ''"):
        with_attachments(plain, {"": b"x"})


def test_inspect_counts_attachments_in_the_file_bytes() -> None:
    data = to_bytes(small_model(attachments={"tokenizer.json": TOKENIZER, "b": b"\x00\x01"}))
    report = inspect_bytes(data)
    layer_bytes = sum(row["bytes"] for row in report["layers"])
    assert layer_bytes + report["header_bytes"] + report["extras_bytes"] + report["attachments_bytes"] == len(data)
    rows = {row["name"]: row for row in report["attachments"]}
    assert rows["b"] == {"name": "b", "length": 2, "deflated": False, "bytes": 2 + spec.CRC.size}
    assert rows["tokenizer.json"]["length"] == len(TOKENIZER) and rows["tokenizer.json"]["deflated"]
    assert report["dense_bytes"] == inspect_bytes(to_bytes(small_model()))["dense_bytes"]


def _parts(data: bytes) -> tuple[dict, list[bytes]]:
    """The header and the units (CRCs stripped) of a written file, to re-assemble altered copies."""
    layout = parse_layout(data)
    units, start = [], layout.header_bytes
    for name, section in layout.sections.items():
        if name.endswith(spec.CRC_PART):
            units.append(data[start : section.offset])
            start = section.offset + section.length
    return layout.header, units


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda h: h["attachments"][0].update(inflated=10), r"attachment inflates to more than 10 bytes; the header says exactly 10"),
        (lambda h: h["attachments"][0].update(inflated=10**6), r"inflates to 1300 bytes; the header says exactly 1000000"),
        (lambda h: h["attachments"][0].update(extra=1), r"attachment 'tokenizer.json': expected fields .* unknown \['extra'\]"),
        (lambda h: h["attachments"][0].update(inflated=2**40), r"expected 'inflated' in 0\.\.268435456"),
        (lambda h: h["attachments"].append(dict(h["attachments"][0])), "expected unique layer and extra names"),
        (lambda h: h["attachments"][0].update(name=""), "attachment #0: expected a non-empty name"),
    ],
)
def test_bad_attachment_entries_raise_format_error(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    header, units = _parts(to_bytes(small_model(attachments={"tokenizer.json": TOKENIZER})))
    mutate(header)
    if len(header["attachments"]) == 2:
        units.append(units[-1])
    with pytest.raises(FormatError, match=message):
        from_bytes(assemble(header, units, version=2))


def test_a_corrupt_attachment_fails_its_checksum() -> None:
    data = bytearray(to_bytes(small_model(attachments={"tokenizer.json": TOKENIZER})))
    section = parse_layout(bytes(data)).sections["attachment tokenizer.json data"]
    data[section.offset] ^= 1
    with pytest.raises(FormatError, match="checksum mismatch") as err:
        from_bytes(bytes(data))
    assert (err.value.section, err.value.offset) == ("attachment tokenizer.json", section.offset)


def test_a_version_1_reader_sees_no_attachment_field_in_old_files() -> None:
    header, _ = _parts(to_bytes(small_model()))
    assert "attachments" not in header


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=12), st.binary(max_size=300), max_size=4))
def test_any_attachments_round_trip(blobs: dict[str, bytes]) -> None:
    data = to_bytes(small_model(attachments=blobs))
    assert from_bytes(data).attachments == blobs
    assert with_attachments(to_bytes(small_model()), blobs) == data


def test_too_many_attachments_are_refused_before_writing() -> None:
    blobs = {f"a{i}": b"" for i in range(spec.MAX_ATTACHMENTS + 1)}
    with pytest.raises(ConfigError, match=f"{spec.MAX_ATTACHMENTS} attachments"):
        to_bytes(small_model(attachments=blobs))
    assert zlib.crc32(b"") == 0  # an empty attachment's CRC-32 is 0, and it still round-trips
    assert from_bytes(to_bytes(small_model(attachments={"e": b""}))).attachments == {"e": b""}
