"""Read and strictly validate a ``.dcz`` file (docs/FORMAT.md).

Every problem -- truncation, wrong magic, unknown version or flags, a failed CRC-32, a header that
inflates past its limit, sizes that disagree with each other or with the limits in
:mod:`deepcompress.format.spec` -- raises :class:`~deepcompress.errors.FormatError` naming the section
and byte offset, and no other exception type escapes for any input bytes. Sizes are checked before
anything is allocated (docs/SECURITY.md).
"""

from __future__ import annotations

import json
import math
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, NoReturn, TypeVar

import numpy as np

from deepcompress.coding import Coder, decode_positions, decode_stream
from deepcompress.jit import HAVE_NUMBA
from deepcompress.compressed import MAX_BIAS_VALUES, CompressedLayer, CompressedModel
from deepcompress.handlers import known_kinds
from deepcompress.errors import FormatError
from deepcompress.format import spec

T = TypeVar("T")
DECODE_THREADS = 2
"""Layers decode on this many threads when numba (which releases the GIL) is installed."""

_CODERS = tuple(c.value for c in Coder if c is not Coder.AUTO)
_LAYER_KEYS = ({"name", "kind", "shape", "wbits", "ibits", "nnz", "k", "cb", "index", "codes"}, {"attrs", "bias", "bk"})
_STREAM_KEYS = {"index": {"coder", "count", "bytes"}, "codes": {"coder", "bytes"}}
_HEADER = spec.PREAMBLE.size


@dataclass(frozen=True)
class Section:
    """One byte range of the file (a codebook, bias, stream, extra tensor or CRC-32)."""

    name: str
    offset: int
    length: int


@dataclass(frozen=True)
class Layout:
    """A validated header: the parsed JSON plus every section's place in the file."""

    header: dict[str, Any]
    header_bytes: int
    """Preamble plus stored (deflated) header."""
    sections: dict[str, Section]
    file_bytes: int


def _bad(message: str) -> NoReturn:
    raise FormatError(message, section="header", offset=_HEADER)


def _get(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``obj[key]`` checked to be a ``kind`` (bools are not ints), else FormatError in the header."""
    if not isinstance(obj, dict) or key not in obj:
        _bad(f"{where}: missing field {key!r}")
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        _bad(f"{where}: expected {key!r} of type {'/'.join(k.__name__ for k in kinds)}, got {type(value).__name__}")
    return value


def _int(obj: Any, key: str, lo: int, hi: int, where: str) -> int:
    value = _get(obj, key, int, where)
    if not lo <= value <= hi:
        _bad(f"{where}: expected {key!r} in {lo}..{hi}, got {value}")
    return value


def _choice(obj: Any, key: str, allowed: tuple[str, ...], where: str) -> str:
    value = _get(obj, key, str, where)
    if value not in allowed:
        _bad(f"{where}: expected {key!r} in {allowed}, got {value!r}")
    return value


def _keys(obj: dict[str, Any], required: set[str], optional: set[str], where: str) -> None:
    missing, unknown = required - obj.keys(), obj.keys() - required - optional
    if missing or unknown:
        _bad(f"{where}: expected fields {sorted(required)} (optional {sorted(optional)}), missing {sorted(missing)}, unknown {sorted(unknown)}")


def _shape(obj: Any, where: str) -> tuple[int, ...]:
    shape = _get(obj, "shape", list, where)
    if len(shape) > spec.MAX_NDIM or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        _bad(f"{where}: expected a shape of at most {spec.MAX_NDIM} non-negative ints, got {shape}")
    if math.prod(shape) > spec.MAX_TENSOR_ELEMENTS:
        _bad(f"{where}: {math.prod(shape)} elements exceed the limit {spec.MAX_TENSOR_ELEMENTS}")
    return tuple(shape)


def _itemsize(dtype: str) -> int:
    return np.dtype(spec.FLOAT_DTYPES[dtype]).itemsize


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not allowed")


def _read_header(data: memoryview) -> tuple[dict[str, Any], int]:
    """Check the preamble and the header's CRC, inflate (bounded) and parse it; return it and its end."""
    size = len(data)
    if size < _HEADER:
        raise FormatError(f"file is {size} bytes, shorter than the {_HEADER}-byte preamble", section="preamble", offset=size)
    magic, version, flags, stored_len, header_crc = spec.PREAMBLE.unpack_from(data, 0)
    if magic != spec.MAGIC:
        raise FormatError(f"expected magic {spec.MAGIC!r}, got {bytes(magic)!r}; not a deepcompress file", section="preamble", offset=0)
    if version not in spec.READABLE_VERSIONS:
        raise FormatError(f"unsupported format version {version}; this reader reads versions {list(spec.READABLE_VERSIONS)}", section="preamble", offset=4)
    if flags & ~spec.KNOWN_FLAGS:
        raise FormatError(f"unknown flags {flags:#06x}; this reader knows only bit 0 (deflated header)", section="preamble", offset=6)
    if stored_len > spec.MAX_HEADER_BYTES:
        raise FormatError(f"header length {stored_len} exceeds the limit {spec.MAX_HEADER_BYTES}", section="preamble", offset=8)
    end = _HEADER + stored_len
    if end > size:
        raise FormatError(f"file truncated: header needs {stored_len} bytes, {size - _HEADER} remain", section="header", offset=size)
    stored = data[_HEADER:end]
    if zlib.crc32(stored, zlib.crc32(data[: spec.CRC_COVERED_PREAMBLE])) != header_crc:
        raise FormatError("header checksum mismatch (CRC-32); the file is corrupt", section="header", offset=_HEADER)
    text = bytes(stored)
    if flags & spec.FLAG_DEFLATED:
        inflater = zlib.decompressobj(spec.DEFLATE_WBITS, zdict=spec.HEADER_ZDICT)
        try:
            text = inflater.decompress(stored, spec.MAX_HEADER_BYTES + 1)
        except zlib.error as exc:
            _bad(f"header is not a valid deflate stream: {exc}")
        if len(text) > spec.MAX_HEADER_BYTES:
            _bad(f"header inflates past the limit of {spec.MAX_HEADER_BYTES} bytes")
        if not inflater.eof or inflater.unused_data:
            _bad("header's deflate stream is incomplete or followed by stray bytes")
    try:
        header = json.loads(text.decode("ascii"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        _bad(f"header is not valid ASCII JSON: {exc}")
    if not isinstance(header, dict):
        _bad(f"expected a JSON object header, got {type(header).__name__}")
    return header, end


def _check_layer(layer: Any, i: int, size: int) -> tuple[str, list[tuple[str, int]], int]:
    """Validate one layer entry; return its name, its sections with their lengths, and its symbol count."""
    if not isinstance(layer, dict):
        _bad(f"layer #{i}: expected an object, got {type(layer).__name__}")
    name = _get(layer, "name", str, f"layer #{i}")
    where = f"layer {name!r}"
    _keys(layer, *_LAYER_KEYS, where)
    _choice(layer, "kind", known_kinds(), where)
    shape = _shape(layer, where)
    numel = math.prod(shape)
    if "attrs" in layer:
        _get(layer, "attrs", dict, where)
    wbits = _int(layer, "wbits", 1, 16, where)
    ibits = _int(layer, "ibits", 1, 16, where)
    nnz = _int(layer, "nnz", 0, numel, where)
    k = _int(layer, "k", 0, 2**wbits, where)
    lengths = [k * _itemsize(_choice(layer, "cb", tuple(spec.FLOAT_DTYPES), where))]
    if "bias" in layer:
        if not shape:
            _bad(f"{where}: a bias needs a weight of at least one dimension")
        dtype = _choice(layer, "bias", (*spec.FLOAT_DTYPES, "q"), where)
        if dtype == "q":
            distinct = _int(layer, "bk", 1, min(MAX_BIAS_VALUES, shape[0]), where)
            lengths.append(spec.bias_bytes(distinct, shape[0]))
        else:
            lengths.append(shape[0] * _itemsize(dtype))
    if "bk" in layer and layer.get("bias") != "q":
        _bad(f"{where}: 'bk' belongs to a bias stored as 'q', got bias {layer.get('bias')!r}")
    symbols = 0
    for stream, lo, hi in (("index", nnz, nnz + numel // (2**ibits - 1)), ("codes", nnz, nnz)):
        entry = _get(layer, stream, dict, where)
        _keys(entry, _STREAM_KEYS[stream], set(), f"{where} {stream}")
        _choice(entry, "coder", _CODERS, f"{where} {stream}")
        symbols += _int(entry, "count", lo, hi, f"{where} {stream}") if stream == "index" else nnz
        lengths.append(_int(entry, "bytes", 0, size, f"{where} {stream}"))
    return name, list(zip(spec.layer_parts("bias" in layer), lengths)), symbols


def _units(header: dict[str, Any], size: int) -> list[tuple[str, list[tuple[str, int]]]]:
    """Checksummed units in file order, each with its sections' names and exact lengths."""
    _keys(header, {"model", "meta", "layers"}, {"extras", "tied", "arch", "attachments"}, "header")
    if "arch" in header:
        _get(header, "arch", dict, "header")
    if "tied" in header and not all(isinstance(k, str) and isinstance(v, str) for k, v in _get(header, "tied", dict, "header").items()):
        _bad("header: expected 'tied' to map tensor names to tensor names")
    _get(header, "model", str, "header")
    _get(header, "meta", dict, "header")
    layers = _get(header, "layers", list, "header")
    extras = _get(header, "extras", list, "header") if "extras" in header else []
    if len(layers) > spec.MAX_LAYERS or len(extras) > spec.MAX_EXTRAS:
        _bad(f"expected at most {spec.MAX_LAYERS} layers and {spec.MAX_EXTRAS} extras, got {len(layers)} and {len(extras)}")
    units: list[tuple[str, list[tuple[str, int]]]] = []
    total = 0
    for i, layer in enumerate(layers):
        name, sections, symbols = _check_layer(layer, i, size)
        units.append((spec.layer_unit(name), sections))
        total += symbols
    if total > spec.MAX_TOTAL_SYMBOLS:
        _bad(f"{total} symbols exceed the limit {spec.MAX_TOTAL_SYMBOLS}")
    for i, extra in enumerate(extras):
        name = _get(extra, "name", str, f"extra #{i}")
        _keys(extra, {"name", "shape"}, {"dtype"}, f"extra {name!r}")
        itemsize = np.dtype(spec.EXTRA_DTYPES[_choice(extra, "dtype", tuple(spec.EXTRA_DTYPES), f"extra {name!r}")]).itemsize if "dtype" in extra else 4
        unit = spec.extra_unit(name)
        units.append((unit, list(zip(spec.EXTRA_PARTS, [itemsize * math.prod(_shape(extra, f"extra {name!r}"))]))))
    attachments = _get(header, "attachments", list, "header") if "attachments" in header else []
    if len(attachments) > spec.MAX_ATTACHMENTS:
        _bad(f"expected at most {spec.MAX_ATTACHMENTS} attachments, got {len(attachments)}")
    for i, attachment in enumerate(attachments):
        name = _get(attachment, "name", str, f"attachment #{i}")
        if not name:
            _bad(f"attachment #{i}: expected a non-empty name")
        _keys(attachment, {"name", "bytes"}, {"inflated"}, f"attachment {name!r}")
        length = _int(attachment, "bytes", 0, size, f"attachment {name!r}")
        if "inflated" in attachment:
            _int(attachment, "inflated", 0, spec.MAX_ATTACHMENT_BYTES, f"attachment {name!r}")
        units.append((spec.attachment_unit(name), list(zip(spec.ATTACHMENT_PARTS, [length]))))
    names = [u for u, _ in units]
    if len(set(names)) != len(names):
        _bad(f"expected unique layer and extra names (and attachment names), got {sorted(n for n in names if names.count(n) > 1)}")
    return units


def parse_layout(data: bytes | bytearray | memoryview, *, max_elements: int | None = None) -> Layout:
    """Check the preamble, the header and every unit's length and CRC-32; decode no stream.

    The header must also fit the decode budget (``spec.check_decode_budget``: symbols bounded by the
    file's size, dense elements by ``max_elements``), so that decoding it cannot exhaust memory.
    """
    spec.check_max_elements(max_elements)
    data = memoryview(data).cast("B")
    size = len(data)
    header, header_end = _read_header(data)
    units = _units(header, size)
    spec.check_decode_budget(header["layers"], size, max_elements)
    offset = header_end
    sections: dict[str, Section] = {}
    for unit, parts in units:
        start = offset
        for part, length in parts + [(spec.CRC_PART, spec.CRC.size)]:
            name = spec.section_name(unit, part)
            if offset + length > size:
                raise FormatError(f"file truncated: section needs {length} bytes, {size - offset} remain", section=name, offset=offset)
            sections[name] = Section(name, offset, length)
            offset += length
        (crc,) = spec.CRC.unpack_from(data, offset - spec.CRC.size)
        if zlib.crc32(data[start : offset - spec.CRC.size]) != crc:
            raise FormatError("checksum mismatch (CRC-32); the file is corrupt", section=unit, offset=start)
    if offset != size:
        raise FormatError(f"{size - offset} unexpected trailing bytes after the last section", section="end", offset=offset)
    return Layout(header, header_end, sections, size)


def _guard(section: Section, fn: Callable[[], T]) -> T:
    """Run ``fn``, turning any decoding failure into a FormatError for ``section``."""
    try:
        return fn()
    except FormatError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, OverflowError, MemoryError) as exc:
        raise FormatError(f"cannot decode: {exc}", section=section.name, offset=section.offset) from None


def _floats(data: memoryview, section: Section, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    raw = data[section.offset : section.offset + section.length]
    return np.frombuffer(raw, dtype=spec.FLOAT_DTYPES[dtype]).astype(np.float32).reshape(shape)


def _shared_bias(data: memoryview, section: Section, distinct: int, count: int) -> np.ndarray:
    """A ``"q"`` bias: ``distinct`` float16 values, then ``count`` packed indices (docs/FORMAT.md)."""
    raw = np.frombuffer(data[section.offset : section.offset + section.length], dtype=np.uint8)
    values = raw[: 2 * distinct].view("<f2").astype(np.float32)
    width = spec.bias_code_bits(distinct)
    bits = np.unpackbits(raw[2 * distinct :], bitorder="little")[: count * width].reshape(count, width)
    codes = (bits.astype(np.int64) << np.arange(width)).sum(axis=1)
    if codes.size and int(codes.max()) >= distinct:
        raise FormatError(f"bias index {int(codes.max())} is past its {distinct} values", section=section.name, offset=section.offset)
    return values[codes]


def _decode_layer(data: memoryview, layout: Layout, entry: dict[str, Any]) -> CompressedLayer:
    name, shape = entry["name"], tuple(entry["shape"])
    unit = spec.layer_unit(name)
    secs = [layout.sections[spec.section_name(unit, p)] for p in spec.layer_parts("bias" in entry)]
    codebook = _floats(data, secs[0], entry["cb"], (entry["k"],))
    if "bias" not in entry:
        bias = None
    elif entry["bias"] == "q":
        bias = _shared_bias(data, secs[1], entry["bk"], shape[0])
    else:
        bias = _floats(data, secs[1], entry["bias"], (shape[0],))
    index_sec, codes_sec = secs[-2], secs[-1]

    def stream(sec: Section, key: str, count: int) -> np.ndarray:
        return decode_stream(entry[key]["coder"], data[sec.offset : sec.offset + sec.length], count)

    symbols = _guard(index_sec, lambda: stream(index_sec, "index", entry["index"]["count"]))
    positions = _guard(index_sec, lambda: decode_positions(symbols, entry["ibits"], math.prod(shape)))
    if positions.size != entry["nnz"]:
        raise FormatError(f"index stream holds {positions.size} weights, header says {entry['nnz']}", section=index_sec.name, offset=index_sec.offset)
    codes = _guard(codes_sec, lambda: stream(codes_sec, "codes", entry["nnz"]))
    bias_dtype = {v: k for k, v in spec.BIAS_DTYPE_CODES.items()}[entry.get("bias", "f4")]
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
            weight_bits=entry["wbits"],
            index_bits=entry["ibits"],
            attrs=entry.get("attrs", {}),
            bias_dtype=bias_dtype,
        ),
    )


def from_bytes(data: bytes | bytearray | memoryview, *, max_elements: int | None = None) -> CompressedModel:
    """Parse and decode a ``.dcz`` file's bytes; raises only :class:`FormatError` on bad input.

    ``max_elements`` raises (or lowers) the decode budget for a trusted file (docs/SECURITY.md).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B")
    layout = parse_layout(view, max_elements=max_elements)
    entries = layout.header["layers"]
    if HAVE_NUMBA and len(entries) > 1:
        with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
            layers = list(pool.map(lambda e: _decode_layer(view, layout, e), entries))
    else:
        layers = [_decode_layer(view, layout, e) for e in entries]
    extras = {}
    for extra in layout.header.get("extras", []):
        sec = layout.sections[spec.section_name(spec.extra_unit(extra["name"]), "data")]
        extras[extra["name"]] = _extra(view, sec, extra.get("dtype", "f4"), tuple(extra["shape"]))
    attachments = {}
    for attachment in layout.header.get("attachments", []):
        sec = layout.sections[spec.section_name(spec.attachment_unit(attachment["name"]), "data")]
        attachments[attachment["name"]] = _attachment(view, sec, attachment.get("inflated"))
    header = layout.header
    try:
        return CompressedModel(model_name=header["model"], layers=layers, extras=extras, metadata=header["meta"],
                               tied=header.get("tied", {}), arch=header.get("arch"), attachments=attachments)
    except ValueError as exc:
        raise FormatError(str(exc), section="header", offset=_HEADER) from None


def _extra(data: memoryview, section: Section, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """An extra tensor in its stored dtype (``f2`` widened to float32, as codebooks are)."""
    raw = data[section.offset : section.offset + section.length]
    array = np.frombuffer(raw, dtype=spec.EXTRA_DTYPES[dtype]).reshape(shape)
    return array.astype(np.float32) if dtype == "f2" else array.astype(array.dtype.newbyteorder("="))


def _attachment(data: memoryview, section: Section, inflated: int | None) -> bytes:
    """An attachment's bytes: verbatim, or raw deflate inflated to exactly ``inflated`` bytes (never more)."""
    raw = data[section.offset : section.offset + section.length]
    if inflated is None:
        return bytes(raw)
    inflater = zlib.decompressobj(spec.DEFLATE_WBITS)
    try:
        blob = inflater.decompress(raw, inflated + 1)
    except zlib.error as exc:
        raise FormatError(f"attachment is not a valid deflate stream: {exc}", section=section.name, offset=section.offset) from None
    if len(blob) != inflated or not inflater.eof or inflater.unused_data:
        found = f"more than {inflated}" if len(blob) > inflated else f"{len(blob)}"
        stray = f" and {len(inflater.unused_data)} stray bytes follow" if inflater.unused_data else ""
        raise FormatError(f"attachment inflates to {found} bytes{stray}; the header says exactly {inflated}",
                          section=section.name, offset=section.offset)
    return blob


def load_compressed(path: "str | os.PathLike[str]", *, max_elements: int | None = None) -> CompressedModel:
    """Read a ``.dcz`` file; ``FileNotFoundError`` if missing, :class:`FormatError` if malformed.

    ``max_elements`` raises the decode budget for a trusted file that declares more (docs/SECURITY.md).
    """
    with open(path, "rb") as handle:
        return from_bytes(handle.read(), max_elements=max_elements)
