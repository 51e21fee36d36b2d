"""Write a :class:`~deepcompress.compressed.CompressedModel` to a ``.dcz`` file (docs/FORMAT.md).

The file holds the three stages of the paper's pipeline (Fig. 1) as data: the pruned positions as
relative indices with fillers (section 2), the weight-sharing codebook and codes (section 3), both
streams entropy coded (section 4). Everything else is overhead and kept small: the JSON header is
deflated, each layer carries one binary CRC-32, codebooks are stored as float16 when that is exact.
"""

from __future__ import annotations

import json
import os
import zlib
from typing import Any

import numpy as np

from deepcompress.atomic import atomic_write_bytes
from deepcompress.coding import Coder, encode_positions, encode_stream
from deepcompress.compressed import CompressedLayer, CompressedModel
from deepcompress.errors import ConfigError
from deepcompress.format import spec


def _floats(array: np.ndarray, dtype: str) -> bytes:
    return np.ascontiguousarray(array, dtype=spec.FLOAT_DTYPES[dtype]).tobytes()


def _shared_bias(bias: np.ndarray) -> tuple[int, bytes]:
    """A ``"q"`` bias section (docs/FORMAT.md): its distinct float16 values and the packed index of each bias.

    Packed by hand with numpy because no library packs arbitrary-width fields this simply; the layout is
    fixed-width, so the reader needs only the value count."""
    values, codes = np.unique(bias, return_inverse=True)
    width = spec.bias_code_bits(values.size)
    bits = ((codes.astype(np.uint16)[:, None] >> np.arange(width, dtype=np.uint16)) & 1).astype(np.uint8)
    return int(values.size), _floats(values, "f2") + np.packbits(bits.reshape(-1), bitorder="little").tobytes()


def _codebook_dtype(codebook: np.ndarray) -> str:
    """``"f2"`` when every centroid survives float16 bit for bit (e.g. a codebook rounded to fp16)."""
    with np.errstate(over="ignore", invalid="ignore"):
        back = codebook.astype(np.float16).astype(np.float32)
    return "f2" if np.array_equal(back.view(np.uint32), codebook.view(np.uint32)) else "f4"


def _layer(layer: CompressedLayer, coder: Coder) -> tuple[dict[str, Any], bytes]:
    """A layer's header entry and its bytes (codebook, bias, index stream, codes stream)."""
    layer.validate()
    if layer.numel > spec.MAX_TENSOR_ELEMENTS:
        raise ConfigError(f"layer {layer.name!r} has {layer.numel} weights; the format allows {spec.MAX_TENSOR_ELEMENTS}")
    index_symbols = encode_positions(layer.positions, layer.index_bits)
    index_coder, index_blob = encode_stream(index_symbols, coder)
    codes_coder, codes_blob = encode_stream(layer.codes, coder)
    cb_dtype = _codebook_dtype(layer.codebook)
    entry: dict[str, Any] = {"name": layer.name, "kind": layer.kind, "shape": list(layer.shape)}
    if layer.attrs:
        entry["attrs"] = layer.attrs
    entry.update(wbits=layer.weight_bits, ibits=layer.index_bits, nnz=layer.nnz, k=int(layer.codebook.size), cb=cb_dtype)
    parts = [_floats(layer.codebook, cb_dtype)]
    if layer.bias is not None:
        entry["bias"] = spec.BIAS_DTYPE_CODES[layer.bias_dtype]
        if entry["bias"] == "q":
            entry["bk"], blob = _shared_bias(layer.bias)
            parts.append(blob)
        else:
            parts.append(_floats(layer.bias, entry["bias"]))
    entry["index"] = {"coder": index_coder.value, "count": int(index_symbols.size), "bytes": len(index_blob)}
    entry["codes"] = {"coder": codes_coder.value, "bytes": len(codes_blob)}
    return entry, b"".join(parts + [index_blob, codes_blob])


def _attachment(name: str, blob: bytes) -> tuple[dict[str, Any], bytes]:
    """An attachment's header entry and stored bytes: raw deflate (RFC 1951) when that is smaller,
    with the inflated length in ``inflated``, else the bytes verbatim."""
    if len(blob) > spec.MAX_ATTACHMENT_BYTES:
        raise ConfigError(f"attachment {name!r} has {len(blob)} bytes; the format allows {spec.MAX_ATTACHMENT_BYTES}")
    packer = zlib.compressobj(spec.DEFLATE_LEVEL, zlib.DEFLATED, spec.DEFLATE_WBITS)
    packed = packer.compress(blob) + packer.flush()
    if len(packed) < len(blob):
        return {"name": name, "bytes": len(packed), "inflated": len(blob)}, packed
    return {"name": name, "bytes": len(blob)}, blob


def _attachments(attachments: dict[str, bytes]) -> tuple[list[dict[str, Any]], list[bytes]]:
    pairs = [_attachment(name, blob) for name, blob in attachments.items()]
    return [entry for entry, _ in pairs], [stored for _, stored in pairs]


def assemble(header: dict[str, Any], units: list[bytes], version: int = spec.VERSION) -> bytes:
    """The file from a header object and the byte units it describes, each closed by its CRC-32.

    ``to_bytes`` builds the header; tests and the fuzzer call this directly to write files whose
    checksums are right but whose contents are not, so that the reader's other checks are reached.
    """
    try:
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"metadata and layer attrs must be JSON-serialisable (no NaN), got: {exc}") from exc
    if len(text) > spec.MAX_HEADER_BYTES:
        raise ConfigError(f"header of {len(text)} bytes exceeds the {spec.MAX_HEADER_BYTES}-byte limit; shrink metadata")
    packer = zlib.compressobj(spec.DEFLATE_LEVEL, zlib.DEFLATED, spec.DEFLATE_WBITS, zdict=spec.HEADER_ZDICT)
    stored = packer.compress(text) + packer.flush()
    head = spec.PREAMBLE.pack(spec.MAGIC, version, spec.FLAG_DEFLATED, len(stored), 0)[: spec.CRC_COVERED_PREAMBLE]
    out = [head, spec.CRC.pack(zlib.crc32(stored, zlib.crc32(head))), stored]
    for unit in units:
        out += [unit, spec.CRC.pack(zlib.crc32(unit))]
    return b"".join(out)


def to_bytes(cm: CompressedModel, coder: "str | Coder" = Coder.AUTO) -> bytes:
    """Serialise ``cm``; ``coder`` forces one entropy coder for every stream (default: smallest per stream)."""
    if not isinstance(cm, CompressedModel):
        raise TypeError(f"expected a CompressedModel, got {type(cm).__name__}")
    choice = Coder.parse(coder, "coder")
    if len(cm.layers) > spec.MAX_LAYERS or len(cm.extras) > spec.MAX_EXTRAS or len(cm.attachments) > spec.MAX_ATTACHMENTS:
        raise ConfigError(f"expected at most {spec.MAX_LAYERS} layers, {spec.MAX_EXTRAS} extras and "
                          f"{spec.MAX_ATTACHMENTS} attachments")
    entries, units = [], []
    for layer in cm.layers:
        entry, unit = _layer(layer, choice)
        entries.append(entry)
        units.append(unit)
    header: dict[str, Any] = {"model": cm.model_name, "meta": cm.metadata, "layers": entries}
    if cm.extras:
        header["extras"] = []
        for name, tensor in cm.extras.items():
            arr = np.asarray(tensor)
            entry: dict[str, Any] = {"name": str(name), "shape": [int(s) for s in arr.shape]}
            dtype = spec.EXTRA_DTYPE_OF[arr.dtype.name]
            if dtype != "f4":
                entry["dtype"] = dtype
            header["extras"].append(entry)
            units.append(np.ascontiguousarray(arr, dtype=spec.EXTRA_DTYPES[dtype]).tobytes())
    if cm.attachments:
        header["attachments"], stored = _attachments(cm.attachments)
        units += stored
    if cm.tied:
        header["tied"] = dict(cm.tied)
    if cm.arch is not None:
        header["arch"] = cm.arch
    return assemble(header, units, version=_version(header))


def _version(header: dict[str, Any]) -> int:
    """1 when the header uses nothing version 2 added (docs/FORMAT.md), else 2."""
    newer = "tied" in header or "arch" in header or "attachments" in header
    newer = newer or any(layer["kind"] not in spec.V1_KINDS for layer in header["layers"])
    newer = newer or any("dtype" in extra for extra in header.get("extras", []))
    newer = newer or any(layer.get("bias") == "q" for layer in header["layers"])
    return spec.VERSION if newer else 1


def with_attachments(data: bytes, attachments: dict[str, bytes]) -> bytes:
    """A file's bytes with its attachments replaced by ``attachments``, every other byte kept.

    The layers and extras are not re-encoded: only the header is rewritten (with the new
    ``attachments`` entry, and version 2) and the attachment units after the last extra are
    replaced, so the tensors read back exactly as before. For adding a tokenizer or a pooling
    config to a file a pipeline wrote (``deepcompress.sentences.attach``).
    """
    from deepcompress.format.reader import parse_layout  # the reader imports nothing from here

    checked = CompressedModel("check", [], attachments=dict(attachments))  # validates names and values
    if len(checked.attachments) > spec.MAX_ATTACHMENTS:
        raise ConfigError(f"expected at most {spec.MAX_ATTACHMENTS} attachments, got {len(checked.attachments)}")
    layout = parse_layout(data, max_elements=spec.MAX_TOTAL_SYMBOLS)  # checks every CRC; decodes nothing
    header = dict(layout.header)
    old = header.pop("attachments", [])
    end = layout.file_bytes
    if old:  # attachments are the last units: cut the file where the first one starts
        end = layout.sections[spec.section_name(spec.attachment_unit(old[0]["name"]), spec.ATTACHMENT_PARTS[0])].offset
    stored: list[bytes] = []
    if checked.attachments:
        header["attachments"], stored = _attachments(checked.attachments)
    head = assemble(header, [], version=_version(header))
    blobs = [blob + spec.CRC.pack(zlib.crc32(blob)) for blob in stored]
    return b"".join([head, bytes(data[layout.header_bytes : end])] + blobs)


def save(cm: CompressedModel, path: "str | os.PathLike[str]", coder: "str | Coder" = Coder.AUTO) -> int:
    """Write ``cm`` to ``path`` atomically (no partial file is ever left); return the file size."""
    data = to_bytes(cm, coder)
    atomic_write_bytes(path, data)
    return len(data)
