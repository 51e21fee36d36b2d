"""Read and strictly validate a ``.dcz`` file (docs/FORMAT.md).

Every problem -- truncation, wrong magic, unknown version, a failed CRC-32, sizes that disagree with
each other or with the limits in :mod:`deepcompress.format.spec` -- raises
:class:`~deepcompress.errors.FormatError` naming the section and byte offset, and no other exception
type escapes for any input bytes. Sizes are checked before anything is allocated.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import numpy as np

from deepcompress.coding import Coder, decode_positions, decode_stream
from deepcompress.coding._jit import HAVE_NUMBA
from deepcompress.compressed import LAYER_KINDS, CompressedLayer, CompressedModel
from deepcompress.errors import FormatError
from deepcompress.format import spec

T = TypeVar("T")
DECODE_THREADS = 2
"""Layers decode on this many threads when numba (which releases the GIL) is installed."""


@dataclass(frozen=True)
class Section:
    """One checksummed byte range of the file."""

    name: str
    offset: int
    length: int


@dataclass(frozen=True)
class Layout:
    """A validated header: the parsed JSON plus every section's place in the file."""

    header: dict[str, Any]
    header_bytes: int
    sections: dict[str, Section]
    file_bytes: int


def _get(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``obj[key]`` checked to be a ``kind`` (bools are not ints), else FormatError in the header."""
    if not isinstance(obj, dict) or key not in obj:
        raise FormatError(f"{where}: missing field {key!r}", section="header", offset=spec.PREAMBLE.size)
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise FormatError(
            f"{where}: expected {key!r} of type {'/'.join(k.__name__ for k in kinds)}, got {type(value).__name__}",
            section="header",
            offset=spec.PREAMBLE.size,
        )
    return value


def _int(obj: Any, key: str, lo: int, hi: int, where: str) -> int:
    value = _get(obj, key, int, where)
    if not lo <= value <= hi:
        raise FormatError(f"{where}: expected {key!r} in {lo}..{hi}, got {value}", section="header", offset=spec.PREAMBLE.size)
    return value


def _shape(obj: Any, where: str) -> tuple[int, ...]:
    shape = _get(obj, "shape", list, where)
    if len(shape) > spec.MAX_NDIM or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise FormatError(f"{where}: expected a shape of at most {spec.MAX_NDIM} non-negative ints, got {shape}", section="header", offset=spec.PREAMBLE.size)
    if math.prod(shape) > spec.MAX_TENSOR_ELEMENTS:
        raise FormatError(f"{where}: {math.prod(shape)} elements exceed the limit {spec.MAX_TENSOR_ELEMENTS}", section="header", offset=spec.PREAMBLE.size)
    return tuple(shape)


def parse_layout(data: bytes | bytearray | memoryview) -> Layout:
    """Check the preamble, the header and every section's length and CRC-32; decode no stream."""
    data = memoryview(data).cast("B")
    size = len(data)
    if size < spec.PREAMBLE.size:
        raise FormatError(f"file is {size} bytes, shorter than the {spec.PREAMBLE.size}-byte preamble", section="preamble", offset=size)
    magic, version, flags, header_len, header_crc = spec.PREAMBLE.unpack_from(data, 0)
    if magic != spec.MAGIC:
        raise FormatError(f"expected magic {spec.MAGIC!r}, got {bytes(magic)!r}; not a deepcompress file", section="preamble", offset=0)
    if version != spec.VERSION:
        raise FormatError(f"unsupported format version {version}; this reader reads version {spec.VERSION}", section="preamble", offset=4)
    if flags != 0:
        raise FormatError(f"expected flags 0, got {flags}", section="preamble", offset=6)
    if header_len > spec.MAX_HEADER_BYTES:
        raise FormatError(f"header length {header_len} exceeds the limit {spec.MAX_HEADER_BYTES}", section="preamble", offset=8)
    start = spec.PREAMBLE.size
    if start + header_len > size:
        raise FormatError(f"file truncated: header needs {header_len} bytes, {size - start} remain", section="header", offset=size)
    raw = data[start : start + header_len]
    if zlib.crc32(raw) != header_crc:
        raise FormatError("header checksum mismatch (CRC-32); the file is corrupt", section="header", offset=start)
    try:
        header = json.loads(bytes(raw).decode("ascii"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FormatError(f"header is not valid ASCII JSON: {exc}", section="header", offset=start) from None
    if not isinstance(header, dict):
        raise FormatError(f"expected a JSON object header, got {type(header).__name__}", section="header", offset=start)
    expected = _expected_sections(header)
    listed = _get(header, "sections", list, "header")
    if len(listed) != len(expected):
        raise FormatError(f"expected {len(expected)} sections, header lists {len(listed)}", section="header", offset=start)
    sections: dict[str, Section] = {}
    offset = start + header_len
    for entry, (name, fixed) in zip(listed, expected):
        where = f"section {name!r}"
        if _get(entry, "name", str, where) != name:
            raise FormatError(f"expected section {name!r}, got {entry['name']!r}", section="header", offset=start)
        length = _int(entry, "length", 0, size, where)
        crc = _int(entry, "crc32", 0, 2**32 - 1, where)
        if fixed is not None and length != fixed:
            raise FormatError(f"expected {fixed} bytes, header says {length}", section=name, offset=offset)
        if offset + length > size:
            raise FormatError(f"file truncated: section needs {length} bytes, {size - offset} remain", section=name, offset=offset)
        if zlib.crc32(data[offset : offset + length]) != crc:
            raise FormatError("section checksum mismatch (CRC-32); the file is corrupt", section=name, offset=offset)
        sections[name] = Section(name, offset, length)
        offset += length
    if offset != size:
        raise FormatError(f"{size - offset} unexpected trailing bytes after the last section", section="end", offset=offset)
    return Layout(header, start + header_len, sections, size)


def _expected_sections(header: dict[str, Any]) -> list[tuple[str, int | None]]:
    """Section names in file order with their exact length where it is fixed (float32 tensors)."""
    _get(header, "model_name", str, "header")
    _get(header, "metadata", dict, "header")
    layers = _get(header, "layers", list, "header")
    extras = _get(header, "extras", list, "header")
    if len(layers) > spec.MAX_LAYERS or len(extras) > spec.MAX_EXTRAS:
        raise FormatError(f"expected at most {spec.MAX_LAYERS} layers and {spec.MAX_EXTRAS} extras", section="header", offset=spec.PREAMBLE.size)
    out: list[tuple[str, int | None]] = []
    names: set[str] = set()
    total = 0
    for i, layer in enumerate(layers):
        where = f"layer #{i}"
        name = _get(layer, "name", str, where)
        if name in names:
            raise FormatError(f"duplicate layer name {name!r}", section="header", offset=spec.PREAMBLE.size)
        names.add(name)
        where = f"layer {name!r}"
        if _get(layer, "kind", str, where) not in LAYER_KINDS:
            raise FormatError(f"{where}: expected kind in {LAYER_KINDS}, got {layer['kind']!r}", section="header", offset=spec.PREAMBLE.size)
        shape = _shape(layer, where)
        numel = math.prod(shape)
        _get(layer, "attrs", dict, where)
        _int(layer, "weight_bits", 1, 16, where)
        bits = _int(layer, "index_bits", 1, 16, where)
        nnz = _int(layer, "nnz", 0, numel, where)
        k = _int(layer, "codebook_size", 0, 2 ** layer["weight_bits"], where)
        has_bias = _get(layer, "has_bias", bool, where)
        if has_bias and not shape:
            raise FormatError(f"{where}: a bias needs a weight of at least one dimension", section="header", offset=spec.PREAMBLE.size)
        for stream, lo, hi in (("index", nnz, nnz + numel // (2**bits - 1)), ("codes", nnz, nnz)):
            entry = _get(layer, stream, dict, where)
            coder = _get(entry, "coder", str, f"{where} {stream}")
            if coder not in (Coder.HUFFMAN.value, Coder.RANS.value):
                raise FormatError(f"{where} {stream}: unknown coder {coder!r}", section="header", offset=spec.PREAMBLE.size)
            total += _int(entry, "count", lo, hi, f"{where} {stream}")
        sizes = [4 * k] + ([4 * shape[0]] if has_bias else []) + [None, None]
        out += zip(spec.section_names(name, has_bias), sizes)
    if total > spec.MAX_TOTAL_SYMBOLS:
        raise FormatError(f"{total} symbols exceed the limit {spec.MAX_TOTAL_SYMBOLS}", section="header", offset=spec.PREAMBLE.size)
    seen: set[str] = set()
    for i, extra in enumerate(extras):
        name = _get(extra, "name", str, f"extra #{i}")
        if name in seen:
            raise FormatError(f"duplicate extra name {name!r}", section="header", offset=spec.PREAMBLE.size)
        seen.add(name)
        out.append((spec.extra_section_name(name), 4 * math.prod(_shape(extra, f"extra {name!r}"))))
    return out


def _guard(section: Section, fn: Callable[[], T]) -> T:
    """Run ``fn``, turning any decoding failure into a FormatError for ``section``."""
    try:
        return fn()
    except FormatError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, OverflowError, MemoryError) as exc:
        raise FormatError(f"cannot decode: {exc}", section=section.name, offset=section.offset) from None


def _f32(data: memoryview, section: Section, shape: tuple[int, ...]) -> np.ndarray:
    raw = data[section.offset : section.offset + section.length]
    return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)


def _decode_layer(data: memoryview, layout: Layout, entry: dict[str, Any]) -> CompressedLayer:
    name = entry["name"]
    names = spec.section_names(name, entry["has_bias"])
    secs = [layout.sections[n] for n in names]
    shape = tuple(entry["shape"])
    codebook = _f32(data, secs[0], (entry["codebook_size"],))
    bias = _f32(data, secs[1], (shape[0],)) if entry["has_bias"] else None
    index_sec, codes_sec = secs[-2], secs[-1]

    def stream(sec: Section, key: str) -> np.ndarray:
        blob = data[sec.offset : sec.offset + sec.length]
        return decode_stream(entry[key]["coder"], blob, entry[key]["count"])

    numel = math.prod(shape)
    symbols = _guard(index_sec, lambda: stream(index_sec, "index"))
    positions = _guard(index_sec, lambda: decode_positions(symbols, entry["index_bits"], numel))
    if positions.size != entry["nnz"]:
        raise FormatError(f"index stream holds {positions.size} weights, header says {entry['nnz']}", section=index_sec.name, offset=index_sec.offset)
    codes = _guard(codes_sec, lambda: stream(codes_sec, "codes"))
    return _guard(
        codes_sec,
        lambda: CompressedLayer(
            name=name,
            kind=entry["kind"],
            shape=shape,
            codebook=codebook,
            positions=positions,
            codes=codes,
            bias=bias,
            weight_bits=entry["weight_bits"],
            index_bits=entry["index_bits"],
            attrs=entry["attrs"],
        ),
    )


def from_bytes(data: bytes | bytearray | memoryview) -> CompressedModel:
    """Parse and decode a ``.dcz`` file's bytes; raises only :class:`FormatError` on bad input."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B")
    layout = parse_layout(view)
    entries = layout.header["layers"]
    if HAVE_NUMBA and len(entries) > 1:
        with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
            layers = list(pool.map(lambda e: _decode_layer(view, layout, e), entries))
    else:
        layers = [_decode_layer(view, layout, e) for e in entries]
    extras = {}
    for extra in layout.header["extras"]:
        sec = layout.sections[spec.extra_section_name(extra["name"])]
        extras[extra["name"]] = _f32(view, sec, tuple(extra["shape"]))
    return CompressedModel(
        model_name=layout.header["model_name"], layers=layers, extras=extras, metadata=layout.header["metadata"]
    )


def load_compressed(path: "str | os.PathLike[str]") -> CompressedModel:
    """Read a ``.dcz`` file; ``FileNotFoundError`` if missing, :class:`FormatError` if malformed."""
    with open(path, "rb") as handle:
        return from_bytes(handle.read())
