"""Write a :class:`~deepcompress.compressed.CompressedModel` to a ``.dcz`` file (docs/FORMAT.md).

The file holds the three stages of the paper's pipeline (Fig. 1) as data: the pruned positions as
relative indices with fillers (section 2), the weight-sharing codebook and codes (section 3), both
streams entropy coded (section 4).
"""

from __future__ import annotations

import json
import os
import zlib

import numpy as np

from deepcompress.atomic import atomic_write_bytes
from deepcompress.coding import Coder, encode_positions, encode_stream
from deepcompress.compressed import CompressedModel
from deepcompress.errors import ConfigError
from deepcompress.format import spec


def _f32(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype="<f4").tobytes()


def to_bytes(cm: CompressedModel, coder: "str | Coder" = Coder.AUTO) -> bytes:
    """Serialise ``cm``; ``coder`` forces one entropy coder for every stream (default: smaller per stream)."""
    if not isinstance(cm, CompressedModel):
        raise TypeError(f"expected a CompressedModel, got {type(cm).__name__}")
    Coder.from_value(coder)
    if len(cm.layers) > spec.MAX_LAYERS or len(cm.extras) > spec.MAX_EXTRAS:
        raise ConfigError(f"expected at most {spec.MAX_LAYERS} layers and {spec.MAX_EXTRAS} extras")
    sections: list[tuple[str, bytes]] = []
    layers = []
    for layer in cm.layers:
        layer.validate()
        if layer.numel > spec.MAX_TENSOR_ELEMENTS:
            raise ConfigError(f"layer {layer.name!r} has {layer.numel} weights; the format allows {spec.MAX_TENSOR_ELEMENTS}")
        index_symbols = encode_positions(layer.positions, layer.index_bits)
        index_coder, index_blob = encode_stream(index_symbols, coder)
        codes_coder, codes_blob = encode_stream(layer.codes, coder)
        payload = [_f32(layer.codebook)]
        if layer.bias is not None:
            payload.append(_f32(layer.bias))
        payload += [index_blob, codes_blob]
        sections += zip(spec.section_names(layer.name, layer.bias is not None), payload)
        layers.append(
            {
                "name": layer.name,
                "kind": layer.kind,
                "shape": list(layer.shape),
                "attrs": layer.attrs,
                "weight_bits": layer.weight_bits,
                "index_bits": layer.index_bits,
                "nnz": layer.nnz,
                "codebook_size": int(layer.codebook.size),
                "has_bias": layer.bias is not None,
                "index": {"coder": index_coder.value, "count": int(index_symbols.size)},
                "codes": {"coder": codes_coder.value, "count": layer.nnz},
            }
        )
    extras = []
    for name, tensor in cm.extras.items():
        arr = np.asarray(tensor)
        extras.append({"name": str(name), "shape": [int(s) for s in arr.shape]})
        sections.append((spec.extra_section_name(str(name)), _f32(arr)))
    header = {
        "model_name": cm.model_name,
        "metadata": cm.metadata,
        "layers": layers,
        "extras": extras,
        "sections": [{"name": n, "length": len(b), "crc32": zlib.crc32(b)} for n, b in sections],
    }
    try:
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"metadata and layer attrs must be JSON-serialisable (no NaN), got: {exc}") from exc
    if len(text) > spec.MAX_HEADER_BYTES:
        raise ConfigError(f"header of {len(text)} bytes exceeds the {spec.MAX_HEADER_BYTES}-byte limit; shrink metadata")
    preamble = spec.PREAMBLE.pack(spec.MAGIC, spec.VERSION, 0, len(text), zlib.crc32(text))
    return b"".join([preamble, text, *(b for _, b in sections)])


def save(cm: CompressedModel, path: "str | os.PathLike[str]", coder: "str | Coder" = Coder.AUTO) -> int:
    """Write ``cm`` to ``path`` atomically (no partial file is ever left); return the file size."""
    data = to_bytes(cm, coder)
    atomic_write_bytes(path, data)
    return len(data)
